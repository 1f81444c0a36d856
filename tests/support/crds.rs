//! Installs the provider's CRDs (from the Rust types) and minimal core Cluster API CRDs in the
//! test control plane, once per binary.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::OnceCell;

use super::wait_for;

/// Applies every CRD of `capd::api::crds::all_crds()`, plus minimal core Cluster API CRDs
/// (`hack/capi-crds.yaml`), and waits until each is Established.
pub async fn install(client: &kube::Client) {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let api = Api::<CustomResourceDefinition>::all(client.clone());
            let params = PatchParams::apply("capd-rs-tests").force();
            let mut crds = capd::api::crds::all_crds().expect("deriving the CRDs");
            let capi =
                std::fs::read_to_string(super::setup::repo_root().join("hack/capi-crds.yaml"))
                    .unwrap();
            for doc in capi.split("\n---\n") {
                crds.push(serde_saphyr::from_str(doc).expect("hack/capi-crds.yaml"));
            }
            for crd in &crds {
                let name = crd.metadata.name.as_deref().expect("CRD name");
                api.patch(name, &params, &Patch::Apply(crd))
                    .await
                    .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
            }
            for crd in &crds {
                let name = crd.metadata.name.as_deref().expect("CRD name");
                wait_for(
                    &format!("CRD {name} to be Established"),
                    Duration::from_secs(30),
                    || async {
                        let crd = api.get(name).await.ok()?;
                        let established = crd
                            .status?
                            .conditions?
                            .into_iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    },
                )
                .await;
            }
        })
        .await;
}

/// Every CRD in the `.yaml` files of `dir` (one or more documents each), in file-name order.
pub fn read_dir(dir: &std::path::Path) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    use anyhow::Context as _;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|f| f.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in yaml_documents(&text) {
            crds.push(
                serde_saphyr::from_str(doc)
                    .with_context(|| format!("parsing a CRD in {}", file.display()))?,
            );
        }
    }
    Ok(crds)
}

/// The non-empty documents of a multi-document YAML text.
pub fn yaml_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Applies `crds` (server-side, forced, as field manager `capd-rs-tests`) and waits until each is
/// Established.
pub async fn apply_and_wait(
    client: &kube::Client,
    crds: &[CustomResourceDefinition],
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply("capd-rs-tests").force();
    for crd in crds {
        let name = crd
            .metadata
            .name
            .as_deref()
            .context("a CRD without a name")?;
        api.patch(name, &params, &Patch::Apply(crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
    }
    for crd in crds {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        super::process::wait_until(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}
