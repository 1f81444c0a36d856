//! The provider's kustomize bundle as clusterctl installs it: `kubectl kustomize config/default`
//! rendered with clusterctl's variable substitution, as YAML documents.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

use super::envsubst;
use super::setup::repo_root;

/// `kubectl kustomize config/default` (no cluster needed).
pub fn build_components() -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", "config/default"])
        .current_dir(repo_root())
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize config/default failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 components")
}

/// The YAML documents of `text` (empty ones dropped).
pub fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("YAML does not parse: {e}\n{text}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The components as clusterctl renders them with `values` (the defaults for the rest).
pub fn rendered_components(values: &[(&str, &str)]) -> Vec<Value> {
    let values: HashMap<&str, &str> = values.iter().copied().collect();
    let text = envsubst::substitute(&build_components(), &values)
        .expect("every component variable has a default");
    documents(&text)
}

/// An object's kind.
pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// An object's name.
pub fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// The one object of `kind` named `name` in `docs`.
pub fn find<'a>(docs: &'a [Value], kind_: &str, name_: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| kind(d) == kind_ && name(d) == name_)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind_} {name_}");
    found[0]
}
