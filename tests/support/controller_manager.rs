//! The parts of kube-controller-manager that installed components rely on and the test control
//! plane lacks: ClusterRole aggregation (Cluster API's managers are bound to aggregated roles,
//! which stay empty without it).

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::Api;
use kube::api::{Patch, PatchParams};

/// Fills every ClusterRole with an `aggregationRule` with the rules of the ClusterRoles its
/// selectors match, as the clusterrole-aggregation controller does; call it after installing
/// components (it does not follow later changes).
pub async fn aggregate_cluster_roles(client: &kube::Client) -> Result<()> {
    let api = Api::<ClusterRole>::all(client.clone());
    let roles = api.list(&Default::default()).await?.items;
    for role in &roles {
        let Some(aggregation) = &role.aggregation_rule else {
            continue;
        };
        let mut rules: Vec<PolicyRule> = Vec::new();
        for selector in aggregation.cluster_role_selectors.iter().flatten() {
            let wanted: BTreeMap<String, String> =
                selector.match_labels.clone().unwrap_or_default();
            for other in &roles {
                let labels = other.metadata.labels.clone().unwrap_or_default();
                let matches = wanted.iter().all(|(k, v)| labels.get(k) == Some(v));
                if matches && other.metadata.name != role.metadata.name {
                    for rule in other.rules.iter().flatten() {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
            }
        }
        let name = role.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "rules": rules })),
        )
        .await?;
    }
    Ok(())
}
