//! Rules shared by several kinds: template metadata, immutability with a readable diff, and
//! ratcheting (an update is refused only for errors the stored object did not already have).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::admission::RequestInfo;
use super::field::{self, FieldError};
use crate::api::capi::TOPOLOGY_DRY_RUN_ANNOTATION;
use crate::api::common::TemplateObjectMeta;
use crate::formats;

/// Template `metadata` labels and annotations must be valid Kubernetes labels and annotations.
pub fn template_metadata(meta: &TemplateObjectMeta, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let labels = field::join(path, "labels");
    for (key, value) in &meta.labels {
        if let Err(detail) = formats::qualified_name(key) {
            errors.push(FieldError::invalid(labels.clone(), key.as_str(), detail));
        }
        if let Err(detail) = formats::label_value(value) {
            errors.push(FieldError::invalid(
                field::key(&labels, key),
                value.as_str(),
                detail,
            ));
        }
    }
    let annotations = field::join(path, "annotations");
    for key in meta.annotations.keys() {
        if let Err(detail) = formats::qualified_name(key) {
            errors.push(FieldError::invalid(
                annotations.clone(),
                key.as_str(),
                detail,
            ));
        }
    }
    if let Err(detail) = formats::annotations_size(&meta.annotations) {
        errors.push(FieldError {
            path: annotations,
            type_: field::ErrorType::Invalid,
            value: None,
            detail,
        });
    }
    errors
}

/// Validates a template from its `spec.template` `(spec, metadata)`, new and (on UPDATE) old:
/// `spec_rules` under `spec.template.spec` plus the metadata rules, ratcheted on update; and on
/// update `spec.template.spec` may not change unless `topology_dry_run`.
pub fn validate_template<S: Serialize>(
    kind: &str,
    new: (&S, &TemplateObjectMeta),
    old: Option<(&S, &TemplateObjectMeta)>,
    topology_dry_run: bool,
    spec_rules: impl Fn(&S, &str) -> Vec<FieldError>,
) -> Vec<FieldError> {
    let template_rules = |(spec, metadata): (&S, &TemplateObjectMeta)| {
        let mut errors = spec_rules(spec, "spec.template.spec");
        errors.extend(template_metadata(metadata, "spec.template.metadata"));
        errors
    };
    let mut errors = ratchet(template_rules(new), old.map(template_rules));
    if let Some((old_spec, _)) = old
        && !topology_dry_run
    {
        errors.extend(immutable_template_spec(kind, old_spec, new.0));
    }
    errors
}

/// A server-side dry-run request from Cluster API's topology controller, which may change a
/// template's spec to compute a diff (`topology.cluster.x-k8s.io/dry-run` on a dry run).
pub fn is_topology_dry_run(
    info: RequestInfo,
    annotations: Option<&BTreeMap<String, String>>,
) -> bool {
    info.dry_run && annotations.is_some_and(|a| a.contains_key(TOPOLOGY_DRY_RUN_ANNOTATION))
}

/// `spec.template.spec` of a template may not change: an error with the differences, unless
/// the two are equal.
pub fn immutable_template_spec<T: Serialize>(kind: &str, old: &T, new: &T) -> Option<FieldError> {
    let (old, new) = (
        serde_json::to_value(old).ok()?,
        serde_json::to_value(new).ok()?,
    );
    let mut changes = Vec::new();
    diff("", &old, &new, &mut changes);
    if changes.is_empty() {
        return None;
    }
    Some(FieldError {
        path: "spec.template.spec".into(),
        type_: field::ErrorType::Invalid,
        value: None,
        detail: format!(
            "{kind} spec.template.spec field is immutable. Please create a new resource instead. Diff: {}",
            changes.join("; ")
        ),
    })
}

/// Lists the differences between two JSON values as `path: old -> new` lines.
fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = field::join(path, key);
                let empty = Value::Object(Default::default());
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(&child, x, y, out),
                    (Some(x @ Value::Object(_)), None) => diff(&child, x, &empty, out),
                    (None, Some(y @ Value::Object(_))) => diff(&child, &empty, y, out),
                    (Some(x), None) => out.push(format!("{child}: {x} -> (unset)")),
                    (None, Some(y)) => out.push(format!("{child}: (unset) -> {y}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&field::index(path, i), x, y, out);
            }
        }
        _ if old != new => out.push(format!(
            "{}: {old} -> {new}",
            if path.is_empty() { "(root)" } else { path }
        )),
        _ => {}
    }
}

/// On UPDATE, drops the errors the stored object already had, so an object stored before a rule
/// existed (or before the webhook was installed) can still be updated, for example by the
/// controller adding its finalizer.
pub fn ratchet(new: Vec<FieldError>, old: Option<Vec<FieldError>>) -> Vec<FieldError> {
    match old {
        None => new,
        Some(old) => new.into_iter().filter(|e| !old.contains(e)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_metadata_labels_and_annotations_are_checked() {
        let mut meta = TemplateObjectMeta::default();
        meta.labels
            .insert("app.kubernetes.io/name".into(), "web".into());
        meta.annotations
            .insert("example.com/note".into(), "any value at all!".into());
        assert!(template_metadata(&meta, "spec.template.metadata").is_empty());

        meta.labels.insert("bad key!".into(), "ok".into());
        meta.labels.insert("tier".into(), "not valid!".into());
        meta.annotations.insert("/no-prefix".into(), "x".into());
        let errors: Vec<String> = template_metadata(&meta, "spec.template.metadata")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with(r#"spec.template.metadata.labels: Invalid value: "bad key!""#),
            "{errors:?}"
        );
        assert!(
            errors[1]
                .starts_with(r#"spec.template.metadata.labels[tier]: Invalid value: "not valid!""#),
            "{errors:?}"
        );
        assert!(
            errors[2]
                .starts_with(r#"spec.template.metadata.annotations: Invalid value: "/no-prefix""#),
            "{errors:?}"
        );
    }

    #[test]
    fn oversized_annotations_are_refused() {
        let mut meta = TemplateObjectMeta::default();
        meta.annotations.insert(
            "big".into(),
            "x".repeat(formats::ANNOTATIONS_TOTAL_SIZE_LIMIT),
        );
        let errors = template_metadata(&meta, "m");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "m.annotations");
    }

    #[test]
    fn immutability_lists_every_change() {
        let old = json!({"customImage": "a", "preLoadImages": ["x"], "extraMounts": [{"hostPath": "/h"}]});
        let new = json!({"customImage": "b", "preLoadImages": ["x", "y"], "bootstrapTimeout": "1m", "extraMounts": [{"hostPath": "/g"}]});
        let error = immutable_template_spec("DockerMachineTemplate", &old, &new)
            .unwrap()
            .to_string();
        assert!(error.starts_with("spec.template.spec: Invalid value: DockerMachineTemplate spec.template.spec field is immutable. Please create a new resource instead. Diff: "), "{error}");
        for change in [
            r#"bootstrapTimeout: (unset) -> "1m""#,
            r#"customImage: "a" -> "b""#,
            r#"extraMounts[0].hostPath: "/h" -> "/g""#,
            r#"preLoadImages: ["x"] -> ["x","y"]"#,
        ] {
            assert!(error.contains(change), "missing {change} in {error}");
        }
        assert!(immutable_template_spec("K", &old, &old).is_none());
    }

    #[test]
    fn ratchet_keeps_only_new_errors() {
        let a = FieldError::required("a", "");
        let b = FieldError::required("b", "");
        assert_eq!(
            ratchet(vec![a.clone(), b.clone()], Some(vec![a.clone()])),
            vec![b.clone()]
        );
        assert_eq!(ratchet(vec![a.clone()], None), vec![a]);
    }
}
