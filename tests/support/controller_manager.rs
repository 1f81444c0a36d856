//! The parts of kube-controller-manager that installed components rely on and the test control
//! plane lacks: ClusterRole aggregation (Cluster API's managers are bound to aggregated roles,
//! which stay empty without it), and the garbage collector's removal of owner references to
//! owners that are gone (Cluster API's topology controller relies on it: it deletes the
//! temporary "shim" owner of a topology cluster's infrastructure and control plane and leaves the
//! reference to the collector; clusterctl move does not move objects owned by a missing object).

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::Api;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope, verbs};

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

/// Removes from the objects of `namespace` every owner reference whose owner (by UID) no longer
/// exists, when the object keeps another owner, as the garbage collector does for such
/// dependents; returns how many objects it changed. Owners are looked up among the namespace's
/// objects and the cluster-scoped ones of the same kinds of API.
pub async fn remove_dangling_owner_references(
    client: &kube::Client,
    namespace: &str,
) -> Result<usize> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut objects = Vec::new();
    let mut uids = std::collections::BTreeSet::new();
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if !capabilities.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = match capabilities.scope {
                Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
                Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for object in list.items {
                uids.extend(object.metadata.uid.clone());
                if capabilities.scope == Scope::Namespaced
                    && capabilities.supports_operation(verbs::PATCH)
                {
                    objects.push((api.clone(), object));
                }
            }
        }
    }
    let mut changed = 0;
    for (api, object) in objects {
        let owners = object.metadata.owner_references.clone().unwrap_or_default();
        let solid: Vec<_> = owners
            .iter()
            .filter(|owner| uids.contains(&owner.uid))
            .cloned()
            .collect();
        if solid.len() == owners.len() || solid.is_empty() {
            continue;
        }
        let name = object.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {
                "ownerReferences": solid,
                "resourceVersion": object.metadata.resource_version,
            }})),
        )
        .await?;
        changed += 1;
    }
    Ok(changed)
}
