//! Field errors as Kubernetes reports them (`k8s.io/apimachinery/pkg/util/validation/field`):
//! a path, a type, the offending value and a detail, aggregated into one `Invalid` status.

use std::fmt;

use serde_json::Value;

/// The kind of a field error; its text is what Kubernetes prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// The value is malformed or breaks a rule.
    Invalid,
    /// A needed value is missing.
    Required,
    /// The field may not be set or changed.
    Forbidden,
    /// A value that must be unique appears twice.
    Duplicate,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "Invalid value",
            Self::Required => "Required value",
            Self::Forbidden => "Forbidden",
            Self::Duplicate => "Duplicate value",
        }
    }
}

/// One rule broken by one field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// The field's path, for example `spec.extraMounts[0].containerPath`.
    pub path: String,
    /// What kind of error it is.
    pub type_: ErrorType,
    /// The offending value, shown for Invalid and Duplicate errors.
    pub value: Option<Value>,
    /// The rule, in words.
    pub detail: String,
}

impl FieldError {
    /// The value at `path` breaks the rule `detail`.
    pub fn invalid(
        path: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            type_: ErrorType::Invalid,
            value: Some(value.into()),
            detail: detail.into(),
        }
    }

    /// `path` must be set.
    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            type_: ErrorType::Required,
            value: None,
            detail: detail.into(),
        }
    }

    /// `path` may not be set or changed.
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            type_: ErrorType::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }

    /// The value at `path` appears more than once.
    pub fn duplicate(path: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            path: path.into(),
            type_: ErrorType::Duplicate,
            value: Some(value.into()),
            detail: String::new(),
        }
    }
}

impl FieldError {
    /// The error without its path (`Invalid value: "x": detail`), as a status cause's message.
    pub fn body(&self) -> String {
        let mut body = self.type_.as_str().to_owned();
        if let Some(value) = &self.value {
            body.push_str(": ");
            body.push_str(&short_value(value));
        }
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.body())
    }
}

/// A value as it appears in an error: JSON, cut short so a huge value cannot flood the message.
fn short_value(value: &Value) -> String {
    const MAX: usize = 200;
    let text = value.to_string();
    if text.len() <= MAX {
        return text;
    }
    let cut = (0..=MAX)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}...", &text[..cut])
}

/// The message of an `Invalid` status, as the apiserver words it:
/// `DockerCluster.infrastructure.cluster.x-k8s.io "name" is invalid: <error>` (one error) or
/// `... is invalid: [<error>, <error>]` (several).
pub fn invalid_message(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> String {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let body = match list.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    format!("{kind}.{group} {name:?} is invalid: {body}")
}

/// Joins a parent path and a child field: `join("spec", "customImage") == "spec.customImage"`.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// The path of item `index` of the list at `path`: `index("spec.failureDomains", 1)`.
pub fn index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The path of the entry `key` of the map at `path`, as Kubernetes writes it: `labels[a/b]`.
pub fn key(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_print_like_kubernetes() {
        let e = FieldError::invalid(
            "spec.failureDomains",
            json!(["b", "a"]),
            "failure domains must be sorted by name",
        );
        assert_eq!(
            e.to_string(),
            r#"spec.failureDomains: Invalid value: ["b","a"]: failure domains must be sorted by name"#
        );
        assert_eq!(
            FieldError::forbidden("spec.customImage", "cannot be modified").to_string(),
            "spec.customImage: Forbidden: cannot be modified"
        );
        assert_eq!(
            FieldError::required("spec.extraMounts[0].hostPath", "").to_string(),
            "spec.extraMounts[0].hostPath: Required value"
        );
        assert_eq!(
            FieldError::duplicate("spec.failureDomains[1].name", "a").to_string(),
            r#"spec.failureDomains[1].name: Duplicate value: "a""#
        );
    }

    #[test]
    fn aggregate_message_names_the_object() {
        let one = [FieldError::forbidden(
            "spec.customImage",
            "cannot be modified",
        )];
        assert_eq!(
            invalid_message(
                "DockerMachine",
                "infrastructure.cluster.x-k8s.io",
                "m1",
                &one
            ),
            r#"DockerMachine.infrastructure.cluster.x-k8s.io "m1" is invalid: spec.customImage: Forbidden: cannot be modified"#
        );
        let two = [one[0].clone(), FieldError::required("spec.x", "")];
        assert!(invalid_message("K", "g", "n", &two).ends_with(
            "is invalid: [spec.customImage: Forbidden: cannot be modified, spec.x: Required value]"
        ));
    }

    #[test]
    fn huge_values_are_cut_on_a_char_boundary() {
        let e = FieldError::invalid("p", "é".repeat(500), "bad");
        let text = e.to_string();
        assert!(text.len() < 260 && text.ends_with("...: bad"), "{text}");
    }

    #[test]
    fn paths_compose() {
        assert_eq!(join("", "spec"), "spec");
        assert_eq!(
            index(&join("spec", "failureDomains"), 2),
            "spec.failureDomains[2]"
        );
        assert_eq!(
            key("spec.template.metadata.labels", "a/b"),
            "spec.template.metadata.labels[a/b]"
        );
    }
}
