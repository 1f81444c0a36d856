//! The `admission.k8s.io/v1` AdmissionReview adapter: parses a request body, runs a kind's pure
//! defaulting or validation, and builds the response. Any body (empty, not JSON, the wrong
//! shape, a foreign kind) gets an HTTP error or a denied review, never a panic.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::field::{FieldError, invalid_message};
use crate::api::parse;
pub use crate::features::Features;

/// The group of every kind these webhooks admit.
const GROUP: &str = crate::api::GROUP;

/// What a webhook needs to know about the request besides the objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// CREATE (false) or UPDATE (true).
    pub update: bool,
    /// The request is a dry run (`dryRun: true`), as topology's server-side dry-run apply.
    pub dry_run: bool,
}

/// A kind the webhooks admit: its pure defaulting and validation.
pub trait AdmissionKind {
    /// The Rust type of the object.
    type Object: DeserializeOwned + Serialize;
    /// The Kubernetes kind, for example `DockerCluster`.
    const KIND: &'static str;

    /// Fills in defaults, in place. Kinds without defaulting keep the object as it is.
    fn default(_object: &mut Self::Object) {}

    /// Every rule `new` breaks; `old` is the stored object on UPDATE.
    fn validate(
        new: &Self::Object,
        old: Option<&Self::Object>,
        info: RequestInfo,
        features: Features,
    ) -> Vec<FieldError>;
}

/// Mutating (defaulting) or validating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Returns a JSON patch with the defaults.
    Mutate,
    /// Allows or denies.
    Validate,
}

/// A body that is not an AdmissionReview at all: answered with HTTP 400 and this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

#[derive(Deserialize)]
struct Review {
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    kind: RequestKind,
    #[serde(default)]
    name: String,
    operation: String,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
}

#[derive(Deserialize)]
struct RequestKind {
    group: String,
    kind: String,
}

/// The `response` of an AdmissionReview.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// base64 of the JSON patch, as `[]byte` is encoded in JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// Answers one AdmissionReview body for kind `K`: the response review, or [`BadRequest`].
pub fn review<K: AdmissionKind>(
    action: Action,
    body: &[u8],
    features: Features,
) -> Result<Value, BadRequest> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("request body is not JSON: {e}")))?;
    let type_of = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("(none)")
            .to_owned()
    };
    let (api_version, kind) = (type_of("apiVersion"), type_of("kind"));
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(BadRequest(format!(
            "expected an admission.k8s.io/v1 AdmissionReview, got {api_version} {kind}"
        )));
    }
    let review: Review = parse::from_value(value)
        .map_err(|e| BadRequest(format!("request body is not an AdmissionReview: {e}")))?;
    let request = review
        .request
        .ok_or_else(|| BadRequest("the AdmissionReview has no request".into()))?;
    let response = respond::<K>(action, request, features);
    Ok(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
}

fn respond<K: AdmissionKind>(action: Action, request: Request, features: Features) -> Response {
    let uid = request.uid.clone();
    match decide::<K>(action, request, features) {
        Ok(patch) => Response {
            uid,
            allowed: true,
            status: None,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch: patch.map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
        },
        Err(status) => Response {
            uid,
            allowed: false,
            status: Some(status),
            patch_type: None,
            patch: None,
        },
    }
}

/// Allows (with an optional serialized JSON patch) or denies (with a `metav1.Status`).
fn decide<K: AdmissionKind>(
    action: Action,
    request: Request,
    features: Features,
) -> Result<Option<Vec<u8>>, Value> {
    if request.kind.group != GROUP || request.kind.kind != K::KIND {
        return Err(bad_request(format!(
            "this webhook admits {}.{GROUP}, not {}.{}",
            K::KIND,
            request.kind.kind,
            request.kind.group
        )));
    }
    let update = match request.operation.as_str() {
        "CREATE" => false,
        "UPDATE" => true,
        _ => return Ok(None),
    };
    let raw = request
        .object
        .ok_or_else(|| bad_request(format!("the {} request has no object", request.operation)))?;
    let object: K::Object = parse_object::<K>(raw, "object")?;
    match action {
        Action::Mutate => default_patch::<K>(object),
        Action::Validate => {
            let old = match (update, request.old_object) {
                (true, Some(old)) => Some(parse_object::<K>(old, "oldObject")?),
                (true, None) => {
                    return Err(bad_request("the UPDATE request has no oldObject".into()));
                }
                (false, _) => None,
            };
            let info = RequestInfo {
                update,
                dry_run: request.dry_run.unwrap_or(false),
            };
            let errors = K::validate(&object, old.as_ref(), info, features);
            if errors.is_empty() {
                Ok(None)
            } else {
                Err(invalid::<K>(&request.name, &errors))
            }
        }
    }
}

fn parse_object<K: AdmissionKind>(value: Value, which: &str) -> Result<K::Object, Value> {
    if !value.is_object() {
        return Err(bad_request(format!("request.{which} is not a {}", K::KIND)));
    }
    parse::from_value(value)
        .map_err(|e| bad_request(format!("request.{which} is not a valid {}: {e}", K::KIND)))
}

/// The JSON patch that applies `K::default` to the object sent, or `None` when there is nothing
/// to default. It is the difference between the object before and after defaulting, both as the
/// Rust types see it, so it touches only the defaulted fields and keeps any field the types do
/// not know. (The apiserver's structural defaulting gives every object a `spec` first.)
fn default_patch<K: AdmissionKind>(mut object: K::Object) -> Result<Option<Vec<u8>>, Value> {
    let internal =
        |e: serde_json::Error| bad_request(format!("cannot serialize the defaulted object: {e}"));
    let before = serde_json::to_value(&object).map_err(internal)?;
    K::default(&mut object);
    let after = serde_json::to_value(&object).map_err(internal)?;
    let defaults = json_patch::diff(&before, &after);
    if defaults.0.is_empty() {
        return Ok(None);
    }
    serde_json::to_vec(&defaults).map(Some).map_err(internal)
}

/// A `metav1.Status` for a request that cannot be admitted as sent (HTTP 400 semantics).
fn bad_request(message: String) -> Value {
    json!({"status": "Failure", "message": message, "reason": "BadRequest", "code": 400})
}

/// A `metav1.Status` like the apiserver's own for an invalid object (HTTP 422, reason Invalid),
/// with one cause per field error.
fn invalid<K: AdmissionKind>(name: &str, errors: &[FieldError]) -> Value {
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": cause_reason(e), "message": e.body(), "field": e.path}))
        .collect();
    json!({
        "status": "Failure",
        "message": invalid_message(K::KIND, GROUP, name, errors),
        "reason": "Invalid",
        "code": 422,
        "details": {"name": name, "group": GROUP, "kind": K::KIND, "causes": causes},
    })
}

fn cause_reason(error: &FieldError) -> &'static str {
    use super::field::ErrorType;
    match error.type_ {
        ErrorType::Invalid => "FieldValueInvalid",
        ErrorType::Required => "FieldValueRequired",
        ErrorType::Forbidden => "FieldValueForbidden",
        ErrorType::Duplicate => "FieldValueDuplicate",
    }
}
