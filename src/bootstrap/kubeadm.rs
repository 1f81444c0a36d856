//! CAPD's adjustments of kubeadm configuration files for nodes that are containers: the CRI
//! socket and kubelet args of the `InitConfiguration`/`JoinConfiguration` node registration,
//! and a `KubeProxyConfiguration` that does not touch the (read-only) conntrack sysctl.
//!
//! Documents round-trip through the ordered [`Yaml`] value, so every other field keeps its
//! value and place (comments and formatting are not kept).

use indexmap::IndexMap;

use super::Options;
use super::yaml::{self, Yaml};

/// CABPK's kubeadm init configuration (ClusterConfiguration + InitConfiguration).
pub(crate) const INIT_PATH: &str = "/run/kubeadm/kubeadm.yaml";
/// CABPK's kubeadm join configuration (JoinConfiguration).
pub(crate) const JOIN_PATH: &str = "/run/kubeadm/kubeadm-join-config.yaml";
/// CABPK's kubeadm configuration in Ignition data.
pub(crate) const IGNITION_CONFIG_PATH: &str = "/etc/kubeadm.yml";
/// CABPK's kubeadm script in Ignition data.
pub(crate) const IGNITION_SCRIPT_PATH: &str = "/etc/kubeadm.sh";

/// The CRI socket kubeadm is told to use when none is set (a self-hosted management node may
/// also have the Docker socket, so kubeadm must not guess).
const CRI_SOCKET: &str = "unix:///var/run/containerd/containerd.sock";

/// Appended to the init configuration: do not set `net.netfilter.nf_conntrack_max`, a global
/// sysctl that is read-only in a container.
pub(crate) const KUBE_PROXY_DOCUMENT: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack:\n  maxPerCore: 0\n";

/// Which configuration a cloud-config kubeadm file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// `InitConfiguration` (and usually `ClusterConfiguration`); gets the kube-proxy document.
    Init,
    /// `JoinConfiguration`.
    Join,
}

impl Expect {
    /// The `kind` of the document to adjust.
    fn kind(self) -> &'static str {
        match self {
            Expect::Init => "InitConfiguration",
            Expect::Join => "JoinConfiguration",
        }
    }
}

/// The kubelet args every node gets, in order.
fn kubelet_args(options: &Options) -> Vec<(&'static str, &'static str)> {
    let mut args = vec![
        // The kubelet would see the host's disk and try to free it: disable disk management.
        ("image-gc-high-threshold", "100"),
        (
            "eviction-hard",
            "nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%",
        ),
        ("fail-swap-on", "false"),
    ];
    if options.kubelet_cgroup_args {
        args.push(("cgroup-root", "/kubelet"));
        args.push(("runtime-cgroups", "/system.slice/containerd.service"));
    }
    args
}

/// Adjusts `/run/kubeadm/kubeadm.yaml` or `/run/kubeadm/kubeadm-join-config.yaml` from a
/// cloud-config: fixes the node registration of the expected document and, for init, adds
/// the kube-proxy document. Errors say what is wrong (the caller names the file).
pub(crate) fn adjust_cloud_config(
    content: &[u8],
    expect: Expect,
    options: &Options,
) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(content).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let mut docs = parse_mappings(text)?;
    let mut adjusted = 0;
    for doc in docs
        .iter_mut()
        .filter(|d| kind_of(d) == Some(expect.kind()))
    {
        fix_node_registration(doc, options)?;
        adjusted += 1;
    }
    if adjusted == 0 {
        return Err(format!("no {} document found", expect.kind()));
    }
    let append_kube_proxy = expect == Expect::Init && !fix_kube_proxy(&mut docs);
    render(&docs, append_kube_proxy).map(String::into_bytes)
}

/// Adjusts Ignition's `/etc/kubeadm.yml`: fixes the node registration of any
/// `InitConfiguration`/`JoinConfiguration` and adds the kube-proxy document. When the file
/// does not parse, the kube-proxy document is only appended, and the reason is returned as a
/// warning.
pub(crate) fn adjust_ignition_config(
    content: &[u8],
    options: &Options,
) -> (Vec<u8>, Option<String>) {
    let adjusted = std::str::from_utf8(content)
        .map_err(|e| format!("not UTF-8 text: {e}"))
        .and_then(|text| {
            let mut docs = parse_mappings(text)?;
            for doc in docs
                .iter_mut()
                .filter(|d| matches!(kind_of(d), Some("InitConfiguration" | "JoinConfiguration")))
            {
                fix_node_registration(doc, options)?;
            }
            let append_kube_proxy = !fix_kube_proxy(&mut docs);
            render(&docs, append_kube_proxy)
        });
    match adjusted {
        Ok(text) => (text.into_bytes(), None),
        Err(problem) => {
            let mut out = content.to_vec();
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(b"---\n");
            out.extend_from_slice(KUBE_PROXY_DOCUMENT.as_bytes());
            (out, Some(problem))
        }
    }
}

/// Parses a multi-document stream whose documents must all be mappings.
fn parse_mappings(text: &str) -> Result<Vec<Yaml>, String> {
    let docs = yaml::parse_documents(text).map_err(|e| format!("not valid YAML: {e}"))?;
    for (i, doc) in docs.iter().enumerate() {
        if !matches!(doc, Yaml::Map(_)) {
            return Err(format!(
                "document {} is {}, expected a mapping",
                i + 1,
                doc.kind()
            ));
        }
    }
    Ok(docs)
}

/// The document's `kind`.
fn kind_of(doc: &Yaml) -> Option<&str> {
    doc.get("kind").and_then(Yaml::as_str)
}

/// Sets `conntrack.maxPerCore: 0` in an existing `KubeProxyConfiguration`; false when there
/// is none (then the caller appends one).
fn fix_kube_proxy(docs: &mut [Yaml]) -> bool {
    let mut found = false;
    for doc in docs.iter_mut() {
        if kind_of(doc) != Some("KubeProxyConfiguration") {
            continue;
        }
        if let Yaml::Map(map) = doc {
            let conntrack = map
                .entry("conntrack".to_owned())
                .or_insert_with(|| Yaml::Map(IndexMap::new()));
            if !matches!(conntrack, Yaml::Map(_)) {
                *conntrack = Yaml::Map(IndexMap::new());
            }
            if let Yaml::Map(conntrack) = conntrack {
                conntrack.insert("maxPerCore".to_owned(), Yaml::Int(0));
            }
            found = true;
        }
    }
    found
}

/// Writes the documents back, each after `---`, then the kube-proxy document if asked.
fn render(docs: &[Yaml], append_kube_proxy: bool) -> Result<String, String> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&yaml::to_text(doc).map_err(|e| format!("cannot write YAML: {e}"))?);
    }
    if append_kube_proxy {
        out.push_str("---\n");
        out.push_str(KUBE_PROXY_DOCUMENT);
    }
    Ok(out)
}

/// Whether the kubeadm API version keeps `kubeletExtraArgs` as a map (v1beta3 and older);
/// v1beta4 and later use a list of `{name, value}`.
fn uses_arg_map(doc: &Yaml) -> bool {
    doc.get("apiVersion")
        .and_then(Yaml::as_str)
        .is_some_and(|v| {
            ["v1beta1", "v1beta2", "v1beta3"]
                .iter()
                .any(|old| v.rsplit('/').next() == Some(*old))
        })
}

/// CAPD's `fixNodeRegistration`: the containerd CRI socket when none is set, and the kubelet
/// args (overwriting any with the same name).
fn fix_node_registration(doc: &mut Yaml, options: &Options) -> Result<(), String> {
    let arg_map = uses_arg_map(doc);
    let Yaml::Map(map) = doc else {
        return Err(format!("document is {}, expected a mapping", doc.kind()));
    };
    let registration = map
        .entry("nodeRegistration".to_owned())
        .or_insert_with(|| Yaml::Map(IndexMap::new()));
    if matches!(registration, Yaml::Null) {
        *registration = Yaml::Map(IndexMap::new());
    }
    let Yaml::Map(registration) = registration else {
        return Err(format!(
            "nodeRegistration is {}, expected a mapping",
            registration.kind()
        ));
    };

    let socket = registration
        .entry("criSocket".to_owned())
        .or_insert(Yaml::Null);
    if matches!(socket, Yaml::Null) || socket.as_str() == Some("") {
        *socket = Yaml::String(CRI_SOCKET.to_owned());
    }

    let extra = registration
        .entry("kubeletExtraArgs".to_owned())
        .or_insert(Yaml::Null);
    if matches!(extra, Yaml::Null) {
        *extra = if arg_map {
            Yaml::Map(IndexMap::new())
        } else {
            Yaml::Seq(Vec::new())
        };
    }
    match extra {
        Yaml::Map(args) => {
            for (name, value) in kubelet_args(options) {
                args.insert(name.to_owned(), Yaml::String(value.to_owned()));
            }
        }
        Yaml::Seq(args) => {
            for (name, value) in kubelet_args(options) {
                let mut found = false;
                for arg in args.iter_mut() {
                    if let Yaml::Map(arg) = arg
                        && arg.get("name").and_then(Yaml::as_str) == Some(name)
                    {
                        arg.insert("value".to_owned(), Yaml::String(value.to_owned()));
                        found = true;
                    }
                }
                if !found {
                    let mut arg = IndexMap::new();
                    arg.insert("name".to_owned(), Yaml::String(name.to_owned()));
                    arg.insert("value".to_owned(), Yaml::String(value.to_owned()));
                    args.push(Yaml::Map(arg));
                }
            }
        }
        other => {
            return Err(format!(
                "nodeRegistration.kubeletExtraArgs is {}, expected a list or a mapping",
                other.kind()
            ));
        }
    }
    Ok(())
}
