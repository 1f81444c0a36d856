//! The part a cloud provider plays for a node of the workload cluster, done by CAPD's
//! `reconcileNode` since there is no Docker cloud provider: the Node hosted by a machine's
//! container gets `spec.providerID` (so core Cluster API matches it to its Machine), and a Node
//! that waits for an external cloud provider (the `uninitialized` taint) gets the machine's
//! InternalIP addresses and loses the taint.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Node, NodeAddress, Secret, Taint};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use crate::api::common::{MachineAddress, MachineAddressType};
use crate::client::RateLimit;

/// The taint a kubelet started with `--cloud-provider=external` puts on its Node until a cloud
/// provider initializes it.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// Clients for workload clusters, built from each Cluster's `<cluster>-kubeconfig` Secret (key
/// `value`, as core Cluster API writes it) and rebuilt when the Secret changes.
pub struct WorkloadClients {
    /// Per `namespace/cluster`: the Secret's resourceVersion and the client built from it.
    clients: Mutex<HashMap<String, (String, kube::Client)>>,
    /// Each client's rate limit (`--clustercache-client-qps` / `-burst`).
    limit: RateLimit,
}

impl WorkloadClients {
    /// No clients yet; each one made will be limited to `limit`.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            clients: Mutex::default(),
            limit,
        }
    }

    /// The client for workload cluster `cluster` in `namespace`, or `None` while core Cluster
    /// API has not written its kubeconfig Secret.
    pub async fn get(
        &self,
        kube: &kube::Client,
        namespace: &str,
        cluster: &str,
    ) -> Result<Option<kube::Client>, String> {
        let name = format!("{cluster}-kubeconfig");
        let Some(secret) = Api::<Secret>::namespaced(kube.clone(), namespace)
            .get_opt(&name)
            .await
            .map_err(|e| format!("Cannot read Secret {name}: {e}"))?
        else {
            return Ok(None);
        };
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        let key = format!("{namespace}/{cluster}");
        if let Some((cached, client)) = self.lock().get(&key)
            && *cached == version
        {
            return Ok(Some(client.clone()));
        }
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get("value"))
            .ok_or_else(|| format!("Secret {name} has no key \"value\""))?;
        let kubeconfig = Kubeconfig::from_yaml(&String::from_utf8_lossy(&value.0))
            // The parser's message quotes the text around the fault, which holds credentials.
            .map_err(|_| format!("Secret {name}: key \"value\" is not a valid kubeconfig (its text is not shown: it holds credentials)"))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("Secret {name}: unusable kubeconfig: {e}"))?;
        let client = crate::client::build(config, self.limit)
            .map_err(|e| format!("Secret {name}: cannot build a client: {e}"))?;
        self.lock().insert(key, (version, client.clone()));
        Ok(Some(client))
    }

    /// Forgets the client of `cluster` in `namespace` (after it failed, or the cluster went).
    pub fn forget(&self, namespace: &str, cluster: &str) {
        self.lock().remove(&format!("{namespace}/{cluster}"));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, kube::Client)>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a machine's Node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// The kubelet has not registered the Node yet.
    Missing,
    /// The Node has the providerID and no `uninitialized` taint.
    Initialized,
}

/// Gives Node `name` in the workload cluster `provider_id` and, when it waits for a cloud
/// provider, `addresses`' InternalIPs and no `uninitialized` taint (CAPD's `reconcileNode`).
pub async fn initialize(
    client: &kube::Client,
    name: &str,
    provider_id: &str,
    addresses: &[MachineAddress],
) -> Result<NodeState, kube::Error> {
    let nodes = Api::<Node>::all(client.clone());
    let Some(node) = nodes.get_opt(name).await? else {
        return Ok(NodeState::Missing);
    };
    let Some(changes) = changes(&node, provider_id, addresses) else {
        return Ok(NodeState::Initialized);
    };
    // The addresses go first and the spec (providerID, the taint's removal) last, as the mark
    // of completion: a failure in between leaves the Node still to be initialized. Each patch
    // carries the resourceVersion it was computed from, so it fails (409, tried again) rather
    // than overwrite a change made meanwhile.
    let mut version = node.metadata.resource_version.clone();
    if let Some(addresses) = changes.addresses {
        let patch =
            json!({"metadata": {"resourceVersion": version}, "status": {"addresses": addresses}});
        let patched = nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        version = patched.metadata.resource_version;
    }
    if let Some(spec) = changes.spec {
        let patch = json!({"metadata": {"resourceVersion": version}, "spec": spec});
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    Ok(NodeState::Initialized)
}

/// What a Node needs: a `spec` merge patch (providerID, taints) and its new address list.
#[derive(Debug, PartialEq)]
struct Changes {
    spec: Option<Value>,
    addresses: Option<Vec<NodeAddress>>,
}

/// The changes `node` needs, or `None` when it is initialized: it has a providerID and no
/// `uninitialized` taint.
fn changes(node: &Node, provider_id: &str, addresses: &[MachineAddress]) -> Option<Changes> {
    let spec = node.spec.clone().unwrap_or_default();
    let current_id = spec.provider_id.clone().unwrap_or_default();
    let taints = spec.taints.clone().unwrap_or_default();
    let tainted = taints.iter().any(is_uninitialized);
    if !current_id.is_empty() && !tainted {
        return None;
    }
    let mut spec_patch = serde_json::Map::new();
    if current_id.is_empty() {
        spec_patch.insert("providerID".into(), json!(provider_id));
    }
    let mut new_addresses = None;
    if tainted {
        let kept: Vec<&Taint> = taints.iter().filter(|t| !is_uninitialized(t)).collect();
        spec_patch.insert("taints".into(), json!(kept));
        // Kept in order, new ones appended: kubelet expects that of host-network pod IPs.
        let mut list = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default();
        for address in addresses
            .iter()
            .filter(|a| a.type_ == MachineAddressType::InternalIp)
        {
            let internal = NodeAddress {
                type_: "InternalIP".into(),
                address: address.address.clone(),
            };
            if !list.contains(&internal) {
                list.push(internal);
            }
        }
        new_addresses = Some(list);
    }
    Some(Changes {
        spec: Some(Value::Object(spec_patch)),
        addresses: new_addresses,
    })
}

fn is_uninitialized(taint: &Taint) -> bool {
    taint.key == UNINITIALIZED_TAINT && taint.effect == "NoSchedule"
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    fn node(provider_id: &str, taints: &[(&str, &str)], addresses: &[(&str, &str)]) -> Node {
        Node {
            spec: Some(NodeSpec {
                provider_id: (!provider_id.is_empty()).then(|| provider_id.to_owned()),
                taints: Some(
                    taints
                        .iter()
                        .map(|(key, effect)| Taint {
                            key: (*key).into(),
                            effect: (*effect).into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(type_, address)| NodeAddress {
                            type_: (*type_).into(),
                            address: (*address).into(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn machine_addresses() -> Vec<MachineAddress> {
        [
            (MachineAddressType::Hostname, "n1"),
            (MachineAddressType::InternalIp, "172.18.0.3"),
            (MachineAddressType::ExternalIp, "172.18.0.3"),
            (MachineAddressType::InternalIp, "fc00::3"),
        ]
        .into_iter()
        .map(|(type_, address)| MachineAddress {
            type_,
            address: address.into(),
        })
        .collect()
    }

    #[test]
    fn a_node_without_provider_id_gets_it_and_nothing_else() {
        let changes = changes(&node("", &[], &[]), "docker:////n1", &machine_addresses());
        assert_eq!(
            changes,
            Some(Changes {
                spec: Some(json!({"providerID": "docker:////n1"})),
                addresses: None
            })
        );
    }

    #[test]
    fn an_initialized_node_is_left_alone() {
        let n = node("docker:////other", &[("foo", "NoSchedule")], &[]);
        assert_eq!(changes(&n, "docker:////n1", &machine_addresses()), None);
    }

    #[test]
    fn a_node_waiting_for_a_cloud_provider_gets_internal_ips_and_loses_the_taint() {
        let n = node(
            "docker:////n1",
            &[(UNINITIALIZED_TAINT, "NoSchedule"), ("keep", "NoExecute")],
            &[("Hostname", "n1"), ("InternalIP", "172.18.0.3")],
        );
        let changes = changes(&n, "docker:////n1", &machine_addresses()).unwrap();
        let spec = changes.spec.unwrap();
        assert_eq!(
            spec.get("providerID"),
            None,
            "an existing providerID is kept"
        );
        assert_eq!(
            spec["taints"],
            json!([{"key": "keep", "effect": "NoExecute"}])
        );
        let addresses: Vec<(String, String)> = changes
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addresses,
            [
                ("Hostname".to_owned(), "n1".to_owned()),
                ("InternalIP".to_owned(), "172.18.0.3".to_owned()),
                ("InternalIP".to_owned(), "fc00::3".to_owned()),
            ]
        );
    }
}
