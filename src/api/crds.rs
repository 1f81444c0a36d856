//! The provider's CustomResourceDefinitions, derived from the Rust types, and their rendering to
//! the committed YAML under `config/crd/bases` (see the `crdgen` binary).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use super::docker_cluster::{DockerCluster, DockerClusterTemplate};
use super::docker_machine::{DockerMachine, DockerMachineTemplate};

/// Errors while rendering the CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The derived CRD could not be converted to or from JSON (a bug in the types).
    #[error("CRD {name} does not round-trip through JSON: {source}")]
    Json {
        /// The CRD's name.
        name: String,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The CRD could not be rendered as YAML.
    #[error("CRD {name} cannot be rendered as YAML: {message}")]
    Yaml {
        /// The CRD's name.
        name: String,
        /// The serializer's message.
        message: String,
    },
}

/// The label that tells core Cluster API which API version implements which contract.
/// (Set here, not with kube's `label` attribute, which would also stamp it on every object.)
pub const CONTRACT_LABEL: (&str, &str) = ("cluster.x-k8s.io/v1beta2", "v1beta2");

/// Every CRD the provider installs, in a stable order.
pub fn all_crds() -> Result<Vec<CustomResourceDefinition>, CrdError> {
    [
        DockerCluster::crd(),
        DockerClusterTemplate::crd(),
        DockerMachine::crd(),
        DockerMachineTemplate::crd(),
    ]
    .into_iter()
    .map(normalize)
    .collect()
}

/// The file name of a CRD under `config/crd/bases`, as controller-gen names it.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// Renders a CRD as the YAML document committed under `config/crd/bases`: keys sorted, whole
/// numbers written as integers (`maximum: 65535`, as controller-gen writes them).
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    let mut value = serde_json::to_value(crd).map_err(|source| CrdError::Json {
        name: crd_name(crd),
        source,
    })?;
    integral_floats_to_integers(&mut value);
    let body = serde_saphyr::to_string(&value).map_err(|e| CrdError::Yaml {
        name: crd_name(crd),
        message: e.to_string(),
    })?;
    Ok(format!("---\n{body}"))
}

fn crd_name(crd: &CustomResourceDefinition) -> String {
    crd.metadata.name.clone().unwrap_or_default()
}

/// Adds the contract label and brings the derived schema in line with CAPD's CRDs:
/// - no root `title`, and the `apiVersion`, `kind` and `metadata` properties controller-gen lists;
/// - no `nullable`: Go's optional fields are omitted, never null, and controller-gen emits none;
/// - int-or-string values as `anyOf: [{type: integer}, {type: string}]` (kube strips the types);
/// - a `spec` whose fields are all optional is optional at the root, as in CAPD, and the
///   apiserver defaults it to `{}`, so every stored object has one. (A template's spec requires
///   `template`, so it stays required: a template without one is useless.)
fn normalize(mut crd: CustomResourceDefinition) -> Result<CustomResourceDefinition, CrdError> {
    let name = crd_name(&crd);
    let (key, value) = CONTRACT_LABEL;
    crd.metadata
        .labels
        .get_or_insert_default()
        .insert(key.into(), value.into());
    let json_err = |source| CrdError::Json {
        name: name.clone(),
        source,
    };
    let mut value = serde_json::to_value(&crd).map_err(json_err)?;
    if let Some(versions) = value
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for version in versions {
            if let Some(root) = version.pointer_mut("/schema/openAPIV3Schema") {
                tidy_schema(root);
                make_spec_optional(root);
                add_object_properties(root);
            }
        }
    }
    serde_json::from_value(value).map_err(json_err)
}

fn integral_floats_to_integers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15)
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

fn tidy_schema(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("nullable");
            if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                && map.contains_key("anyOf")
            {
                map.insert(
                    "anyOf".into(),
                    serde_json::json!([{"type": "integer"}, {"type": "string"}]),
                );
            }
            map.values_mut().for_each(tidy_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_schema),
        _ => {}
    }
}

fn make_spec_optional(root: &mut Value) {
    let Some(spec) = root
        .pointer_mut("/properties/spec")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if spec.contains_key("required") {
        return;
    }
    spec.insert("default".into(), Value::Object(Default::default()));
    if let Some(Value::Array(required)) = root.get_mut("required") {
        required.retain(|r| r != "spec");
        if required.is_empty() {
            root.as_object_mut().map(|m| m.remove("required"));
        }
    }
}

fn add_object_properties(root: &mut Value) {
    let Some(map) = root.as_object_mut() else {
        return;
    };
    map.remove("title");
    let Some(Value::Object(properties)) = map.get_mut("properties") else {
        return;
    };
    let string =
        |description: &str| serde_json::json!({"description": description, "type": "string"});
    properties.insert(
        "apiVersion".into(),
        string(
            "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
        ),
    );
    properties.insert(
        "kind".into(),
        string(
            "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
        ),
    );
    properties.insert("metadata".into(), serde_json::json!({"type": "object"}));
}
