//! Container names and labels: kind's labels (so `kind get nodes` and CAPI's e2e tooling see
//! the containers) plus labels naming the Kubernetes object that owns each container.

use std::collections::BTreeMap;

/// kind's label with the cluster name.
pub const KIND_CLUSTER: &str = "io.x-k8s.kind.cluster";
/// kind's label with the node role.
pub const KIND_ROLE: &str = "io.x-k8s.kind.role";
/// The role of the load-balancer container.
pub const ROLE_LOAD_BALANCER: &str = "external-load-balancer";
/// The kind of the owning object (`DockerCluster`, `DockerMachine`).
pub const OWNER_KIND: &str = "capd-rs.x-k8s.io/owner-kind";
/// The namespace of the owning object.
pub const OWNER_NAMESPACE: &str = "capd-rs.x-k8s.io/owner-namespace";
/// The name of the owning object.
pub const OWNER_NAME: &str = "capd-rs.x-k8s.io/owner-name";

/// The Kubernetes object a container belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `DockerCluster` or `DockerMachine`.
    pub kind: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl Owner {
    /// The Kubernetes object `obj`, a `kind`, as a container owner.
    pub fn of(kind: &str, obj: &impl kube::Resource) -> Self {
        let meta = obj.meta();
        Self {
            kind: kind.to_owned(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// The owner labels to put on a container.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (OWNER_KIND.to_owned(), self.kind.clone()),
            (OWNER_NAMESPACE.to_owned(), self.namespace.clone()),
            (OWNER_NAME.to_owned(), self.name.clone()),
        ])
    }

    /// The owner named by a container's labels, if it has all three.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self {
            kind: labels.get(OWNER_KIND)?.clone(),
            namespace: labels.get(OWNER_NAMESPACE)?.clone(),
            name: labels.get(OWNER_NAME)?.clone(),
        })
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The load balancer's container name: `<cluster>-lb`, as CAPD and kind name it.
pub fn load_balancer_name(cluster: &str) -> String {
    format!("{cluster}-lb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_through_labels() {
        let owner = Owner {
            kind: "DockerCluster".into(),
            namespace: "ns".into(),
            name: "c".into(),
        };
        assert_eq!(Owner::from_labels(&owner.labels()), Some(owner.clone()));
        let mut partial = owner.labels();
        partial.remove(OWNER_NAME);
        assert_eq!(Owner::from_labels(&partial), None);
        assert_eq!(owner.to_string(), "DockerCluster ns/c");
        assert_eq!(load_balancer_name("my-cluster"), "my-cluster-lb");
    }
}
