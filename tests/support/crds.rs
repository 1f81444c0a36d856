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
