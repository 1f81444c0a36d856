//! Tests of the whole translation, with bootstrap data shaped like CABPK's.

use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::yaml::{self, Yaml};
use super::*;

const PREFLIGHT: &str = "--ignore-preflight-errors=SystemVerification,Swap,FileContent--proc-sys-net-bridge-bridge-nf-call-iptables";
const STARTED: &str =
    "mkdir -p /run/cluster-api && echo started > /run/cluster-api/capd.bootstrap.started && ";
const EVICTION: &str = "nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%";

const CA_CRT: &str = "-----BEGIN CERTIFICATE-----\nMIIC6jCCAdKgAwIBAgIBADANBgkqhkiG9w0BAQsFADAVMRMwEQYDVQQDEwprdWJl\ncm5ldGVzMB4XDTI0MDEwMTAwMDAwMFoXDTM0MDEwMTAwMDAwMFowFTETMBEGA1UE\n-----END CERTIFICATE-----\n";
const CA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAv0Hn1WcJzPUCvhmR8lQk3Wcl2X+mq6wDRsnWrk3kbGmS8eU4\n-----END RSA PRIVATE KEY-----\n";
const SA_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq1\n-----END PUBLIC KEY-----\n";

const CLUSTER_CONFIGURATION_V1BETA4: &str = r#"apiServer:
  certSANs:
  - localhost
  - 127.0.0.1
  - 0.0.0.0
  - host.docker.internal
apiVersion: kubeadm.k8s.io/v1beta4
clusterName: capi-quickstart
controlPlaneEndpoint: 172.18.0.3:6443
controllerManager:
  extraArgs:
  - name: enable-hostpath-provisioner
    value: "true"
dns: {}
etcd:
  local:
    dataDir: /var/lib/etcd
kind: ClusterConfiguration
kubernetesVersion: v1.35.0
networking:
  dnsDomain: cluster.local
  podSubnet: 192.168.0.0/16
  serviceSubnet: 10.128.0.0/12
scheduler: {}
"#;

const INIT_CONFIGURATION_V1BETA4: &str = r#"apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {}
nodeRegistration:
  imagePullPolicy: IfNotPresent
  imagePullSerial: true
  kubeletExtraArgs:
  - name: eviction-hard
    value: memory.available<100Mi
  - name: node-labels
    value: tier=control-plane
  taints: null
timeouts:
  controlPlaneComponentHealthCheck: 4m0s
"#;

const INIT_CONFIGURATION_V1BETA3: &str = r#"apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint: {}
nodeRegistration:
  criSocket: unix:///run/custom.sock
  kubeletExtraArgs:
    eviction-hard: memory.available<100Mi
    node-labels: tier=control-plane
"#;

const JOIN_CONFIGURATION_V1BETA4: &str = r#"apiVersion: kubeadm.k8s.io/v1beta4
discovery:
  bootstrapToken:
    apiServerEndpoint: 172.18.0.3:6443
    caCertHashes:
    - sha256:45db2b5bd9e3f4b3a7c4ff2b0c4b2a9b2dd2c3c58b7d0a4ae3ff1f3c1e2d0a11
    token: abcdef.0123456789abcdef
kind: JoinConfiguration
nodeRegistration:
  imagePullPolicy: IfNotPresent
  kubeletExtraArgs:
  - name: eviction-hard
    value: nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%
  taints: null
"#;

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("write to memory");
    encoder.finish().expect("finish in memory")
}

fn cloud_config(doc: &str) -> Result<Plan, BootstrapError> {
    plan(Format::CloudConfig, doc.as_bytes(), &Options::default())
}

fn argv(command: &Command) -> Vec<&str> {
    command.argv.iter().map(String::as_str).collect()
}

fn stdin_text(command: &Command) -> &str {
    std::str::from_utf8(command.stdin.as_deref().expect("command has stdin")).expect("UTF-8")
}

/// The command that writes `path` (not appends).
fn write_of<'a>(plan: &'a Plan, path: &str) -> &'a Command {
    let script = format!("cat > {}", shell::quote_always(path));
    plan.commands
        .iter()
        .find(|c| c.argv.get(2) == Some(&script))
        .unwrap_or_else(|| panic!("no command writes {path}: {:#?}", plan.commands))
}

fn documents(text: &str) -> Vec<Yaml> {
    yaml::parse_documents(text).expect("valid YAML documents")
}

fn map_keys(doc: &Yaml) -> Vec<String> {
    match doc {
        Yaml::Map(map) => map.keys().cloned().collect(),
        other => panic!("not a mapping: {other:?}"),
    }
}

/// The kubelet extra args of a v1beta4 document, as (name, value) pairs.
fn arg_list(doc: &Yaml) -> Vec<(String, String)> {
    let Some(Yaml::Seq(args)) = doc
        .get("nodeRegistration")
        .and_then(|n| n.get("kubeletExtraArgs"))
    else {
        panic!("no kubeletExtraArgs list in {doc:?}")
    };
    args.iter()
        .map(|arg| {
            (
                arg.get("name")
                    .and_then(Yaml::as_str)
                    .unwrap_or("")
                    .to_owned(),
                arg.get("value")
                    .and_then(Yaml::as_str)
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

const REGISTRY_CONF: &str = "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n";
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n";

/// A CABPK control-plane (init) cloud-config with a few extra files and modules.
fn control_plane_doc() -> String {
    let audit_b64 = STANDARD.encode(AUDIT_POLICY);
    let registry_gz_b64 = STANDARD.encode(gzip(REGISTRY_CONF.as_bytes()));
    format!(
        r#"## template: jinja
#cloud-config

write_files:
-   path: /etc/kubernetes/pki/ca.crt
    owner: root:root
    permissions: '0640'
    content: |
{ca_crt}
-   path: /etc/kubernetes/pki/ca.key
    owner: root:root
    permissions: '0600'
    content: |
{ca_key}
-   path: /etc/kubernetes/pki/sa.pub
    owner: root:root
    permissions: '0644'
    content: |
{sa_pub}
-   path: /etc/kubernetes/audit-policy.yaml
    encoding: "base64"
    owner: kube:kube
    content: |
      {audit_b64}
-   path: /etc/containerd/config.toml
    encoding: "gz+b64"
    append: true
    content: {registry_gz_b64}
-   path: /run/kubeadm/kubeadm.yaml
    owner: root:root
    permissions: '0640'
    content: |
      ---
{cluster}
      ---
{init}
-   path: /run/cluster-api/placeholder
    owner: root:root
    permissions: '0640'
    content: "This placeholder file is used to create the /run/cluster-api sub directory in a way that is compatible with both Linux and Windows (mkdir -p /run/cluster-api does not work with Windows)"
runcmd:
  - "echo pre-kubeadm"
  - 'kubeadm init --config /run/kubeadm/kubeadm.yaml  && echo success > /run/cluster-api/bootstrap-success.complete'
users:
  - name: capi
    sudo: ALL=(ALL) NOPASSWD:ALL
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx capi@example
ntp:
  enabled: true
  servers:
    - time.google.com
"#,
        ca_crt = indent(CA_CRT, 6),
        ca_key = indent(CA_KEY, 6),
        sa_pub = indent(SA_PUB, 6),
        cluster = indent(CLUSTER_CONFIGURATION_V1BETA4, 6),
        init = indent(INIT_CONFIGURATION_V1BETA4, 6),
    )
}

#[test]
fn control_plane_cloud_config_order_and_files() {
    let plan = cloud_config(&control_plane_doc()).expect("valid cloud-config");
    let commands: Vec<Vec<&str>> = plan.commands.iter().map(argv).collect();
    let sh = |s: &str| {
        vec!["/bin/sh", "-c", s]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let expected: Vec<Vec<String>> = vec![
        vec!["mkdir".into(), "-p".into(), "/etc/kubernetes/pki".into()],
        sh("cat > '/etc/kubernetes/pki/ca.crt'"),
        vec![
            "chmod".into(),
            "0640".into(),
            "/etc/kubernetes/pki/ca.crt".into(),
        ],
        vec!["mkdir".into(), "-p".into(), "/etc/kubernetes/pki".into()],
        sh("cat > '/etc/kubernetes/pki/ca.key'"),
        vec![
            "chmod".into(),
            "0600".into(),
            "/etc/kubernetes/pki/ca.key".into(),
        ],
        vec!["mkdir".into(), "-p".into(), "/etc/kubernetes/pki".into()],
        sh("cat > '/etc/kubernetes/pki/sa.pub'"),
        vec!["mkdir".into(), "-p".into(), "/etc/kubernetes".into()],
        sh("cat > '/etc/kubernetes/audit-policy.yaml'"),
        vec![
            "chown".into(),
            "kube:kube".into(),
            "/etc/kubernetes/audit-policy.yaml".into(),
        ],
        vec!["mkdir".into(), "-p".into(), "/etc/containerd".into()],
        sh("cat >> '/etc/containerd/config.toml'"),
        vec!["mkdir".into(), "-p".into(), "/run/kubeadm".into()],
        sh("cat > '/run/kubeadm/kubeadm.yaml'"),
        vec![
            "chmod".into(),
            "0640".into(),
            "/run/kubeadm/kubeadm.yaml".into(),
        ],
        vec!["mkdir".into(), "-p".into(), "/run/cluster-api".into()],
        sh("cat > '/run/cluster-api/placeholder'"),
        vec![
            "chmod".into(),
            "0640".into(),
            "/run/cluster-api/placeholder".into(),
        ],
        sh("echo pre-kubeadm"),
        sh(&format!(
            "{STARTED}kubeadm init {PREFLIGHT} --config /run/kubeadm/kubeadm.yaml  && echo success > {SUCCESS_SENTINEL}"
        )),
    ];
    assert_eq!(commands, expected);

    // Contents, decoded.
    assert_eq!(
        stdin_text(write_of(&plan, "/etc/kubernetes/pki/ca.crt")),
        CA_CRT
    );
    assert_eq!(
        stdin_text(write_of(&plan, "/etc/kubernetes/pki/ca.key")),
        CA_KEY
    );
    assert_eq!(
        stdin_text(write_of(&plan, "/etc/kubernetes/pki/sa.pub")),
        SA_PUB
    );
    assert_eq!(
        stdin_text(write_of(&plan, "/etc/kubernetes/audit-policy.yaml")),
        AUDIT_POLICY
    );
    let append = &plan.commands[12];
    assert_eq!(stdin_text(append), REGISTRY_CONF);
    assert_eq!(append.description, "append to /etc/containerd/config.toml");
    assert!(
        stdin_text(write_of(&plan, "/run/cluster-api/placeholder")).starts_with("This placeholder")
    );

    // Retries, stdin and descriptions.
    let (files, runcmd) = plan.commands.split_at(plan.commands.len() - 2);
    assert!(files.iter().all(|c| c.retries == 5));
    assert!(runcmd.iter().all(|c| c.retries == 0 && c.stdin.is_none()));
    assert!(
        files
            .iter()
            .all(|c| c.argv[0] != "/bin/sh" || c.stdin.is_some())
    );
    assert_eq!(
        plan.commands[1].description,
        "write /etc/kubernetes/pki/ca.crt"
    );
    assert_eq!(
        plan.commands[2].description,
        "chmod 0640 /etc/kubernetes/pki/ca.crt"
    );
    assert!(
        runcmd[1]
            .description
            .starts_with("run runcmd[1]: kubeadm init")
    );

    // CABPK's runcmd writes the success sentinel; no extra one is added.
    let sentinel_writers = plan
        .commands
        .iter()
        .filter(|c| c.argv.iter().any(|a| a.contains(SUCCESS_SENTINEL)))
        .count();
    assert_eq!(sentinel_writers, 1);

    // Unknown modules are skipped, with a warning each, in document order.
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    assert!(plan.warnings[0].contains("\"users\""));
    assert!(plan.warnings[1].contains("\"ntp\""));
    assert!(plan.warnings.iter().all(|w| w.contains("skipped")));
}

#[test]
fn control_plane_kubeadm_init_config_is_adjusted() {
    let plan = cloud_config(&control_plane_doc()).expect("valid cloud-config");
    let text = stdin_text(write_of(&plan, "/run/kubeadm/kubeadm.yaml"));
    assert!(text.starts_with("---\n"), "{text}");
    assert!(
        text.ends_with(&format!("---\n{}", kubeadm::KUBE_PROXY_DOCUMENT)),
        "{text}"
    );
    let docs = documents(text);
    assert_eq!(docs.len(), 3);

    // The ClusterConfiguration is unchanged, keys in their order.
    let original: Yaml = yaml::parse_document(CLUSTER_CONFIGURATION_V1BETA4).expect("valid");
    assert_eq!(docs[0], original);
    assert_eq!(map_keys(&docs[0]), map_keys(&original));

    // The InitConfiguration's node registration is fixed; the rest is kept.
    let init = &docs[1];
    assert_eq!(
        init.get("kind").and_then(Yaml::as_str),
        Some("InitConfiguration")
    );
    let registration = init.get("nodeRegistration").expect("nodeRegistration");
    assert_eq!(
        registration.get("criSocket").and_then(Yaml::as_str),
        Some("unix:///var/run/containerd/containerd.sock")
    );
    assert_eq!(registration.get("taints"), Some(&Yaml::Null));
    assert_eq!(registration.get("imagePullSerial"), Some(&Yaml::Bool(true)));
    assert_eq!(
        init.get("timeouts")
            .and_then(|t| t.get("controlPlaneComponentHealthCheck"))
            .and_then(Yaml::as_str),
        Some("4m0s")
    );
    assert_eq!(
        arg_list(init),
        pairs(&[
            ("eviction-hard", EVICTION),
            ("node-labels", "tier=control-plane"),
            ("image-gc-high-threshold", "100"),
            ("fail-swap-on", "false"),
        ])
    );

    // The kube-proxy document leaves conntrack alone.
    let proxy = &docs[2];
    assert_eq!(
        proxy.get("kind").and_then(Yaml::as_str),
        Some("KubeProxyConfiguration")
    );
    assert_eq!(
        proxy.get("conntrack").and_then(|c| c.get("maxPerCore")),
        Some(&Yaml::Int(0))
    );
}

fn init_file_doc(init: &str) -> String {
    format!(
        "#cloud-config\nwrite_files:\n- path: /run/kubeadm/kubeadm.yaml\n  content: |\n    ---\n{}\n    ---\n{}\n",
        indent(CLUSTER_CONFIGURATION_V1BETA4, 4),
        indent(init, 4)
    )
}

#[test]
fn kubelet_cgroup_args_in_kind_mode_0_20() {
    let options = Options {
        kubelet_cgroup_args: true,
    };
    let plan = plan(
        Format::CloudConfig,
        init_file_doc(INIT_CONFIGURATION_V1BETA4).as_bytes(),
        &options,
    )
    .expect("valid cloud-config");
    let docs = documents(stdin_text(write_of(&plan, "/run/kubeadm/kubeadm.yaml")));
    assert_eq!(
        arg_list(&docs[1]),
        pairs(&[
            ("eviction-hard", EVICTION),
            ("node-labels", "tier=control-plane"),
            ("image-gc-high-threshold", "100"),
            ("fail-swap-on", "false"),
            ("cgroup-root", "/kubelet"),
            ("runtime-cgroups", "/system.slice/containerd.service"),
        ])
    );
}

#[test]
fn kubeadm_v1beta3_uses_a_map_and_keeps_a_set_cri_socket() {
    let plan = cloud_config(&init_file_doc(INIT_CONFIGURATION_V1BETA3)).expect("valid");
    let text = stdin_text(write_of(&plan, "/run/kubeadm/kubeadm.yaml"));
    let docs = documents(text);
    let registration = docs[1].get("nodeRegistration").expect("nodeRegistration");
    assert_eq!(
        registration.get("criSocket").and_then(Yaml::as_str),
        Some("unix:///run/custom.sock")
    );
    let args = registration.get("kubeletExtraArgs").expect("args");
    assert_eq!(
        map_keys(args),
        [
            "eviction-hard",
            "node-labels",
            "image-gc-high-threshold",
            "fail-swap-on"
        ]
    );
    assert_eq!(
        args.get("eviction-hard").and_then(Yaml::as_str),
        Some(EVICTION)
    );
    assert_eq!(
        args.get("fail-swap-on").and_then(Yaml::as_str),
        Some("false")
    );
    // Strings that look like numbers or booleans stay strings.
    assert_eq!(
        args.get("image-gc-high-threshold").and_then(Yaml::as_str),
        Some("100")
    );
    assert!(text.contains("kind: KubeProxyConfiguration"));
}

#[test]
fn kubeadm_missing_node_registration_is_created() {
    let init = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n";
    let plan = cloud_config(&init_file_doc(init)).expect("valid");
    let docs = documents(stdin_text(write_of(&plan, "/run/kubeadm/kubeadm.yaml")));
    let registration = docs[1].get("nodeRegistration").expect("created");
    assert!(matches!(
        registration.get("kubeletExtraArgs"),
        Some(Yaml::Map(_))
    ));
    let init = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  criSocket: \"\"\n";
    let plan = cloud_config(&init_file_doc(init)).expect("valid");
    let docs = documents(stdin_text(write_of(&plan, "/run/kubeadm/kubeadm.yaml")));
    assert_eq!(arg_list(&docs[1]).len(), 3);
    assert_eq!(
        docs[1]
            .get("nodeRegistration")
            .and_then(|n| n.get("criSocket"))
            .and_then(Yaml::as_str),
        Some("unix:///var/run/containerd/containerd.sock")
    );
}

#[test]
fn kubeadm_existing_kube_proxy_configuration_is_fixed_not_duplicated() {
    let doc = format!(
        "write_files:\n- path: /run/kubeadm/kubeadm.yaml\n  content: |\n{}\n    ---\n{}\n    ---\n    apiVersion: kubeproxy.config.k8s.io/v1alpha1\n    kind: KubeProxyConfiguration\n    mode: ipvs\n",
        indent(CLUSTER_CONFIGURATION_V1BETA4, 4),
        indent(INIT_CONFIGURATION_V1BETA4, 4)
    );
    let plan = cloud_config(&doc).expect("valid");
    let docs = documents(stdin_text(write_of(&plan, "/run/kubeadm/kubeadm.yaml")));
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[2].get("mode").and_then(Yaml::as_str), Some("ipvs"));
    assert_eq!(
        docs[2].get("conntrack").and_then(|c| c.get("maxPerCore")),
        Some(&Yaml::Int(0))
    );
}

#[test]
fn worker_join_config() {
    let doc = format!(
        r#"## template: jinja
#cloud-config

write_files:
-   path: /run/kubeadm/kubeadm-join-config.yaml
    owner: root:root
    permissions: '0640'
    content: |
      ---
{join}
-   path: /run/cluster-api/placeholder
    owner: root:root
    permissions: '0640'
    content: "This placeholder file is used to create the /run/cluster-api sub directory"
runcmd:
  - kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml  && echo success > /run/cluster-api/bootstrap-success.complete
"#,
        join = indent(JOIN_CONFIGURATION_V1BETA4, 6)
    );
    let plan = cloud_config(&doc).expect("valid");
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let text = stdin_text(write_of(&plan, "/run/kubeadm/kubeadm-join-config.yaml"));
    assert!(!text.contains("KubeProxyConfiguration"), "{text}");
    let docs = documents(text);
    assert_eq!(docs.len(), 1);
    let original = yaml::parse_document(JOIN_CONFIGURATION_V1BETA4).expect("valid");
    assert_eq!(map_keys(&docs[0]), map_keys(&original));
    assert_eq!(docs[0].get("discovery"), original.get("discovery"));
    assert_eq!(
        arg_list(&docs[0]),
        pairs(&[
            ("eviction-hard", EVICTION),
            ("image-gc-high-threshold", "100"),
            ("fail-swap-on", "false"),
        ])
    );
    let last = plan.commands.last().expect("commands");
    assert_eq!(
        argv(last),
        [
            "/bin/sh",
            "-c",
            &format!(
                "{STARTED}kubeadm join {PREFLIGHT} --config /run/kubeadm/kubeadm-join-config.yaml  && echo success > {SUCCESS_SENTINEL}"
            )
        ]
    );
    assert_eq!(last.retries, 0);
}

#[test]
fn runcmd_list_items_are_quoted_and_keep_their_text() {
    let doc = r#"runcmd:
  - [kubeadm, join, --config, /run/kubeadm/kubeadm-join-config.yaml]
  - [echo, "it's", yes, 0640, "a b"]
  - [sh, -c, "echo $HOME"]
  - "kubeadm join --ignore-preflight-errors=all --config x"
"#;
    let plan = cloud_config(doc).expect("valid");
    let scripts: Vec<&str> = plan.commands.iter().map(|c| c.argv[2].as_str()).collect();
    assert_eq!(
        scripts,
        [
            format!(
                "{STARTED}kubeadm join {PREFLIGHT} --config /run/kubeadm/kubeadm-join-config.yaml"
            )
            .as_str(),
            r"echo 'it'\''s' yes 0640 'a b'",
            "sh -c 'echo $HOME'",
            &format!("{STARTED}kubeadm join --ignore-preflight-errors=all --config x"),
        ]
    );
    assert!(
        plan.commands
            .iter()
            .all(|c| c.retries == 0 && c.argv[..2] == ["/bin/sh", "-c"])
    );
}

#[test]
fn runcmd_generic_fallback_when_shapes_are_mixed() {
    // A nested list defeats the string reading; the generic one reports the argument.
    let err = cloud_config("runcmd:\n  - [echo, [nested]]\n").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("runcmd[0][1]"), "{message}");
    assert!(message.contains("found a list"), "{message}");
    // Numbers and booleans in a list still become arguments.
    let plan = cloud_config("runcmd:\n  - [sleep, 5]\n  - null_module_is_fine\nbootcmd: [x]\n")
        .expect("valid");
    assert_eq!(plan.commands[0].argv[2], "sleep 5");
    assert_eq!(plan.warnings.len(), 1);
}

#[test]
fn permissions_owner_and_append_forms() {
    let doc = r#"write_files:
- path: /a
  permissions: 0755
- path: /b
  permissions: "640"
- path: /c
  permissions: "0o600"
- path: /d
  owner: "root:root"
  permissions: '0644'
- path: /e
  owner: nobody
  append: "yes"
- path: "/etc/it's here.conf"
  content: x
"#;
    let plan = cloud_config(doc).expect("valid");
    let commands: Vec<Vec<&str>> = plan.commands.iter().map(argv).collect();
    assert!(commands.contains(&vec!["chmod", "0755", "/a"]));
    assert!(commands.contains(&vec!["chmod", "0640", "/b"]));
    assert!(commands.contains(&vec!["chmod", "0600", "/c"]));
    assert!(
        !commands
            .iter()
            .any(|c| c.last() == Some(&"/d") && c[0] != "mkdir")
    );
    assert!(commands.contains(&vec!["chown", "nobody", "/e"]));
    assert!(commands.contains(&vec!["/bin/sh", "-c", "cat >> '/e'"]));
    assert!(commands.contains(&vec!["/bin/sh", "-c", r"cat > '/etc/it'\''s here.conf'"]));
    // Every file gets its content on stdin, empty when none is given.
    assert_eq!(write_of(&plan, "/a").stdin.as_deref(), Some(&b""[..]));
    assert!(commands.contains(&vec!["mkdir", "-p", "/"]));
}

#[test]
fn encodings() {
    let payload = "hello\nworld\n";
    let doc = format!(
        "write_files:\n- {{path: /b64, encoding: B64, content: {b64}}}\n- {{path: /gz, encoding: gzip+base64, content: {gzb64}}}\n- {{path: /gzb64, encoding: gz+base64, content: {gzb64}}}\n- {{path: /gzipb64, encoding: gzip+b64, content: {gzb64}}}\n- {{path: /plain, encoding: text/plain, content: plain}}\n- {{path: /odd, encoding: rot13, content: odd}}\n",
        b64 = STANDARD.encode(payload),
        gzb64 = STANDARD.encode(gzip(payload.as_bytes())),
    );
    let plan = cloud_config(&doc).expect("valid");
    for path in ["/b64", "/gz", "/gzb64", "/gzipb64"] {
        assert_eq!(stdin_text(write_of(&plan, path)), payload, "{path}");
    }
    assert_eq!(stdin_text(write_of(&plan, "/plain")), "plain");
    assert_eq!(stdin_text(write_of(&plan, "/odd")), "odd");
    assert_eq!(plan.warnings.len(), 1);
    assert!(plan.warnings[0].contains("write_files[5] (/odd)"));
    assert!(plan.warnings[0].contains("rot13"));
}

fn error_message(result: Result<Plan, BootstrapError>) -> String {
    match result {
        Ok(plan) => panic!("expected an error, got {plan:#?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cloud_config_errors_name_the_problem() {
    let message = error_message(cloud_config("#cloud-config\nwrite_files: [\n"));
    assert!(
        message.starts_with("cloud-config is not valid YAML: "),
        "{message}"
    );
    assert!(!message.contains('\n'), "no source snippet: {message}");

    let message = error_message(cloud_config("- a\n- b\n"));
    assert!(
        message.contains("mapping") && message.contains("a list"),
        "{message}"
    );
    let message = error_message(cloud_config("#cloud-config\n"));
    assert!(message.contains("an empty document"), "{message}");

    let message = error_message(cloud_config(
        "write_files:\n- path: /ok\n  content: x\n- content: no path\n",
    ));
    assert_eq!(message, "write_files[1]: `path` is required");

    let message = error_message(cloud_config(
        "write_files:\n- path: /etc/x.key\n  encoding: base64\n  content: 'not*base64!'\n",
    ));
    assert!(message.contains("write_files[0]"), "{message}");
    assert!(message.contains("/etc/x.key"), "{message}");
    assert!(message.contains("base64"), "{message}");

    let message = error_message(cloud_config(
        "write_files:\n- path: /etc/x.gz\n  encoding: gz+b64\n  content: aGVsbG8=\n",
    ));
    assert!(
        message.contains("/etc/x.gz") && message.contains("gzip"),
        "{message}"
    );

    let message = error_message(cloud_config("runcmd:\n  - echo ok\n  - {kubeadm: init}\n"));
    assert_eq!(
        message,
        "runcmd[1]: expected a string or a list of arguments, found a mapping"
    );

    let message = error_message(cloud_config("runcmd: echo hi\n"));
    assert_eq!(message, "runcmd: expected a list, found a string");
    let message = error_message(cloud_config("write_files: {path: /x}\n"));
    assert_eq!(message, "write_files: expected a list, found a mapping");
    let message = error_message(cloud_config("write_files:\n- just a string\n"));
    assert_eq!(
        message,
        "write_files[0]: expected a mapping, found a string"
    );

    let message = error_message(cloud_config(
        "write_files:\n- path: /x\n  permissions: rwx\n",
    ));
    assert!(
        message.contains("write_files[0] (/x)") && message.contains("\"rwx\""),
        "{message}"
    );
    let message = error_message(cloud_config(
        "write_files:\n- path: /x\n  permissions: '9999'\n",
    ));
    assert!(message.contains("invalid permissions"), "{message}");
    let message = error_message(cloud_config("write_files:\n- path: relative/x\n"));
    assert!(message.contains("must be absolute"), "{message}");
    let message = error_message(cloud_config("write_files:\n- path: /x\n  owner: -rf\n"));
    assert!(message.contains("invalid owner"), "{message}");
    let message = error_message(cloud_config("write_files:\n- path: /x\n  append: maybe\n"));
    assert!(message.contains("`append` must be a boolean"), "{message}");
    let message = error_message(cloud_config(
        "write_files:\n- path: /x\n  content: {a: b}\n",
    ));
    assert_eq!(
        message,
        "write_files[0] (/x): `content` must be a string, found a mapping"
    );

    let message = error_message(plan(Format::CloudConfig, b"\xff\xfe", &Options::default()));
    assert!(message.contains("not valid UTF-8"), "{message}");
}

#[test]
fn kubeadm_file_errors_name_the_path() {
    let message = error_message(cloud_config(
        "write_files:\n- path: /run/kubeadm/kubeadm.yaml\n  content: |\n    a: [\n",
    ));
    assert!(
        message.starts_with("kubeadm configuration /run/kubeadm/kubeadm.yaml: not valid YAML"),
        "{message}"
    );
    let message = error_message(cloud_config(
        "write_files:\n- path: /run/kubeadm/kubeadm.yaml\n  content: |\n    kind: ClusterConfiguration\n",
    ));
    assert_eq!(
        message,
        "kubeadm configuration /run/kubeadm/kubeadm.yaml: no InitConfiguration document found"
    );
    let message = error_message(cloud_config(
        "write_files:\n- path: /run/kubeadm/kubeadm-join-config.yaml\n  content: |\n    - a list\n",
    ));
    assert!(
        message.contains("/run/kubeadm/kubeadm-join-config.yaml")
            && message.contains("document 1 is a list"),
        "{message}"
    );
    let message = error_message(cloud_config(
        "write_files:\n- path: /run/kubeadm/kubeadm-join-config.yaml\n  content: |\n    kind: JoinConfiguration\n    nodeRegistration:\n      kubeletExtraArgs: 3\n",
    ));
    assert!(
        message.contains("kubeletExtraArgs is a number"),
        "{message}"
    );
}

#[test]
fn formats_parse_and_display() {
    assert_eq!(
        "cloud-config".parse::<Format>().expect("known"),
        Format::CloudConfig
    );
    assert_eq!(
        "ignition".parse::<Format>().expect("known"),
        Format::Ignition
    );
    assert_eq!(Format::default(), Format::CloudConfig);
    assert_eq!(Format::Ignition.to_string(), "ignition");
    let message = "cloud-init".parse::<Format>().unwrap_err().to_string();
    assert_eq!(
        message,
        "unknown bootstrap data format \"cloud-init\": expected \"cloud-config\" or \"ignition\""
    );
    assert!("Ignition".parse::<Format>().is_err());
}

fn data_url_percent(text: &str) -> String {
    let mut out = String::from("data:,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const KUBEADM_SH: &str = "#!/bin/bash\nset -e\n\ncat <<EOF > /etc/modules-load.d/containerd.conf\noverlay\nbr_netfilter\nEOF\n\nkubeadm init --config /etc/kubeadm.yml \nmkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete\nmv /etc/kubeadm.yml /tmp/\n";
const KUBEADM_SERVICE: &str = "[Unit]\nDescription=kubeadm\nConditionPathExists=/etc/kubeadm.yml\nAfter=network.target\n[Service]\nType=oneshot\nExecStart=/bin/bash /etc/kubeadm.sh\n[Install]\nWantedBy=multi-user.target\n";
const CONTAINERD_DROPIN: &str = "[Service]\nLimitNOFILE=1048576\n";

fn ignition_v3() -> String {
    let kubeadm_yml =
        format!("---\n{CLUSTER_CONFIGURATION_V1BETA4}---\n{INIT_CONFIGURATION_V1BETA4}");
    serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA"]}]},
        "storage": {
            "files": [
                {
                    "path": "/etc/kubeadm.sh",
                    "mode": 448,
                    "contents": {"source": data_url_percent(KUBEADM_SH)}
                },
                {
                    "path": "/etc/kubeadm.yml",
                    "mode": 384,
                    "overwrite": true,
                    "contents": {"source": format!("data:text/plain;charset=utf-8;base64,{}", STANDARD.encode(&kubeadm_yml))}
                },
                {
                    "path": "/etc/containerd/config.toml",
                    "mode": 420,
                    "contents": {
                        "compression": "gzip",
                        "source": format!("data:;base64,{}", STANDARD.encode(gzip(REGISTRY_CONF.as_bytes())))
                    },
                    "user": {"name": "root"},
                    "group": {"name": "root"}
                },
                {
                    "path": "/etc/hosts",
                    "append": [
                        {"source": "data:,10.0.0.1%20extra%0A"},
                        {"source": format!("data:;base64,{}", STANDARD.encode(gzip(b"10.0.0.2 more\n"))), "compression": "gzip"}
                    ],
                    "user": {"id": 1000},
                    "group": {"name": "core"}
                }
            ]
        },
        "systemd": {
            "units": [
                {"name": "containerd.service", "dropins": [{"name": "10-limits.conf", "contents": CONTAINERD_DROPIN}]},
                {"name": "kubeadm.service", "enabled": true, "contents": KUBEADM_SERVICE}
            ]
        }
    })
    .to_string()
}

#[test]
fn ignition_v3_files_units_and_sentinel() {
    let plan = plan(
        Format::Ignition,
        ignition_v3().as_bytes(),
        &Options::default(),
    )
    .expect("valid Ignition");
    let commands: Vec<Vec<&str>> = plan.commands.iter().map(argv).collect();
    let sentinel = format!("mkdir -p /run/cluster-api && echo success > {SUCCESS_SENTINEL}");
    let expected: Vec<Vec<&str>> = vec![
        vec!["mkdir", "-p", "/etc"],
        vec!["/bin/sh", "-c", "cat > '/etc/kubeadm.sh'"],
        vec!["chmod", "0700", "/etc/kubeadm.sh"],
        vec!["mkdir", "-p", "/etc"],
        vec!["/bin/sh", "-c", "cat > '/etc/kubeadm.yml'"],
        vec!["chmod", "0600", "/etc/kubeadm.yml"],
        vec!["mkdir", "-p", "/etc/containerd"],
        vec!["/bin/sh", "-c", "cat > '/etc/containerd/config.toml'"],
        vec!["chmod", "0644", "/etc/containerd/config.toml"],
        vec!["mkdir", "-p", "/etc"],
        vec!["/bin/sh", "-c", "cat >> '/etc/hosts'"],
        vec!["/bin/sh", "-c", "cat >> '/etc/hosts'"],
        vec!["chown", "1000:core", "/etc/hosts"],
        vec!["mkdir", "-p", "/etc/systemd/system/containerd.service.d"],
        vec![
            "/bin/sh",
            "-c",
            "cat > '/etc/systemd/system/containerd.service.d/10-limits.conf'",
        ],
        vec!["mkdir", "-p", "/etc/systemd/system"],
        vec![
            "/bin/sh",
            "-c",
            "cat > '/etc/systemd/system/kubeadm.service'",
        ],
        vec!["systemctl", "daemon-reload"],
        vec!["systemctl", "enable", "--now", "kubeadm.service"],
        vec!["/bin/sh", "-c", &sentinel],
    ];
    assert_eq!(commands, expected);

    // /etc/kubeadm.sh: percent-decoded, kubeadm init rewritten, the here-document untouched.
    let script = stdin_text(&plan.commands[1]);
    assert_eq!(
        script,
        KUBEADM_SH.replace(
            "kubeadm init --config",
            &format!("{STARTED}kubeadm init --ignore-preflight-errors=all --config")
        )
    );

    // /etc/kubeadm.yml: node registration fixed and the kube-proxy document appended.
    let docs = documents(stdin_text(&plan.commands[4]));
    assert_eq!(docs.len(), 3);
    assert_eq!(
        docs[1].get("kind").and_then(Yaml::as_str),
        Some("InitConfiguration")
    );
    assert!(arg_list(&docs[1]).contains(&("fail-swap-on".to_owned(), "false".to_owned())));
    assert_eq!(
        docs[2].get("kind").and_then(Yaml::as_str),
        Some("KubeProxyConfiguration")
    );

    // Gzip and append resources are decoded.
    assert_eq!(stdin_text(&plan.commands[7]), REGISTRY_CONF);
    assert_eq!(stdin_text(&plan.commands[10]), "10.0.0.1 extra\n");
    assert_eq!(stdin_text(&plan.commands[11]), "10.0.0.2 more\n");
    assert_eq!(stdin_text(&plan.commands[14]), CONTAINERD_DROPIN);
    assert_eq!(stdin_text(&plan.commands[16]), KUBEADM_SERVICE);

    // Retries: files and reload 5, starting units 0; the sentinel is last and says why.
    let enable = &plan.commands[18];
    assert_eq!(enable.retries, 0);
    assert!(plan.commands[..18].iter().all(|c| c.retries == 5));
    let last = plan.commands.last().expect("commands");
    assert!(
        last.description
            .contains("Ignition has no CABPK success marker")
    );
    assert_eq!(last.retries, 5);

    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(plan.warnings[0].contains("passwd.users"));
}

#[test]
fn ignition_v2_cabpk_shape() {
    let config = serde_json::json!({
        "ignition": {"config": {}, "security": {"tls": {}}, "timeouts": {}, "version": "2.3.0"},
        "networkd": {},
        "passwd": {},
        "storage": {
            "files": [
                {
                    "filesystem": "root",
                    "path": "/etc/kubeadm.sh",
                    "contents": {"source": "data:,%23!%2Fbin%2Fbash%0Aset%20-e%0Akubeadm%20join%0Amv%20%2Fetc%2Fkubeadm.yml%20%2Ftmp%2F%0A", "verification": {}},
                    "mode": 448
                },
                {
                    "filesystem": "root",
                    "path": "/etc/kubeadm.yml",
                    "contents": {"source": "data:,---%0Afoo%0A", "verification": {}},
                    "mode": 384
                },
                {
                    "filesystem": "root",
                    "path": "/var/log/extra.log",
                    "append": true,
                    "contents": {"source": "data:,line%0A"},
                    "user": {"name": "core"}
                }
            ]
        },
        "systemd": {
            "units": [
                {"name": "kubeadm.service", "enable": true, "contents": KUBEADM_SERVICE},
                {"name": "ntpd.service", "enabled": true},
                {"name": "other.service", "mask": true}
            ]
        }
    });
    let plan = plan(
        Format::Ignition,
        config.to_string().as_bytes(),
        &Options::default(),
    )
    .expect("valid Ignition v2");
    let commands: Vec<Vec<&str>> = plan.commands.iter().map(argv).collect();
    assert_eq!(
        stdin_text(&plan.commands[1]),
        format!(
            "#!/bin/bash\nset -e\n{STARTED}kubeadm join --ignore-preflight-errors=all\nmv /etc/kubeadm.yml /tmp/\n"
        )
    );
    // Not a kubeadm document: the kube-proxy document is still appended, with a warning.
    assert_eq!(
        stdin_text(&plan.commands[4]),
        format!("---\nfoo\n---\n{}", kubeadm::KUBE_PROXY_DOCUMENT)
    );
    assert!(plan.warnings.iter().any(|w| w.contains("/etc/kubeadm.yml")));
    assert!(commands.contains(&vec!["/bin/sh", "-c", "cat >> '/var/log/extra.log'"]));
    assert!(commands.contains(&vec!["chown", "core", "/var/log/extra.log"]));
    assert!(commands.contains(&vec!["systemctl", "enable", "--now", "kubeadm.service"]));
    assert!(commands.contains(&vec!["systemctl", "enable", "--now", "ntpd.service"]));
    assert!(!commands.iter().any(|c| c.contains(&"other.service")));
    assert!(plan.warnings.iter().any(|w| w.contains("mask")));
    assert_eq!(
        commands
            .iter()
            .filter(|c| **c == ["systemctl", "daemon-reload"])
            .count(),
        1
    );
    assert!(plan.commands.last().expect("commands").argv[2].contains(SUCCESS_SENTINEL));
}

#[test]
fn ignition_errors_name_the_problem() {
    let ignition = |value: serde_json::Value| {
        plan(
            Format::Ignition,
            value.to_string().as_bytes(),
            &Options::default(),
        )
    };
    let message = error_message(ignition(
        serde_json::json!({"ignition": {"version": "4.0.0"}}),
    ));
    assert_eq!(
        message,
        "unsupported Ignition spec version \"4.0.0\" (ignition.version): expected 2.x or 3.x"
    );
    let message = error_message(ignition(serde_json::json!({"storage": {}})));
    assert!(message.contains("version \"\""), "{message}");
    let message = error_message(plan(
        Format::Ignition,
        b"#cloud-config\n",
        &Options::default(),
    ));
    assert!(
        message.starts_with("Ignition config is not valid JSON"),
        "{message}"
    );
    let message = error_message(ignition(serde_json::json!([1])));
    assert!(message.contains("a list"), "{message}");

    let message = error_message(ignition(serde_json::json!({
        "ignition": {"version": "3.0.0"},
        "storage": {"files": [{"path": "/etc/remote", "contents": {"source": "https://example.com/x"}}]}
    })));
    assert!(
        message.contains("storage.files[0] (/etc/remote)") && message.contains("only data: URLs"),
        "{message}"
    );
    let message = error_message(ignition(serde_json::json!({
        "ignition": {"version": "3.0.0"},
        "storage": {"files": [{"path": "/etc/x", "mode": "0644"}]}
    })));
    assert!(message.contains("invalid mode \"0644\""), "{message}");
    let message = error_message(ignition(serde_json::json!({
        "ignition": {"version": "3.0.0"},
        "storage": {"files": [{"path": "/etc/x", "contents": {"source": "data:,x", "compression": "xz"}}]}
    })));
    assert!(
        message.contains("unsupported compression \"xz\""),
        "{message}"
    );
    let message = error_message(ignition(serde_json::json!({
        "ignition": {"version": "3.0.0"},
        "storage": {"files": [{"contents": {"source": "data:,x"}}]}
    })));
    assert_eq!(message, "storage.files[0]: `path` is required");
    let message = error_message(ignition(serde_json::json!({
        "ignition": {"version": "3.0.0"},
        "systemd": {"units": [{"name": "../evil.service"}]}
    })));
    assert!(
        message.starts_with("systemd.units[0]: invalid name"),
        "{message}"
    );
    let message = error_message(ignition(serde_json::json!({
        "ignition": {"version": "3.0.0"},
        "systemd": {"units": {"name": "x"}}
    })));
    assert_eq!(message, "systemd.units: expected a list, found an object");
}

#[test]
fn paths_and_helpers() {
    assert_eq!(
        parent_dir("/etc/kubernetes/pki/ca.crt"),
        "/etc/kubernetes/pki"
    );
    assert_eq!(parent_dir("/x"), "/");
    assert_eq!(parent_dir("//x"), "/");
    assert_eq!(parent_dir("/a//b"), "/a");
    assert!(check_path("/etc/x").is_ok());
    assert!(check_path("/etc/").is_err());
    assert!(check_path("etc/x").is_err());
    assert!(check_path("").is_err());
    assert_eq!(octal_mode(420), "0644");
    assert_eq!(octal_mode(0o1777), "1777");
    assert_eq!(shorten("a\nb", 10), "a b");
    assert_eq!(shorten("ééééééééééé", 5), "éé...");
}

/// No input panics: every prefix of realistic documents, and some odd shapes.
#[test]
fn never_panics() {
    let options = Options {
        kubelet_cgroup_args: true,
    };
    let control_plane = control_plane_doc();
    let ignition = ignition_v3();
    for (format, text) in [
        (Format::CloudConfig, control_plane.as_str()),
        (Format::Ignition, ignition.as_str()),
    ] {
        let boundaries: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .step_by(7)
            .chain([text.len()])
            .collect();
        for end in boundaries {
            let _ = plan(format, &text.as_bytes()[..end], &options);
        }
    }
    for odd in [
        "",
        "~",
        "[]",
        "{}",
        "write_files:",
        "runcmd:",
        "write_files: [~]",
        "runcmd: [~]",
        "runcmd: [[]]",
        "runcmd: [[~]]",
        "write_files: [{path: ~}]",
        "? [a]\n: b\n",
        "write_files: [{path: /run/kubeadm/kubeadm.yaml, content: '---'}]",
        "write_files: [{path: /run/kubeadm/kubeadm.yaml, content: 'kind: InitConfiguration\nnodeRegistration: 3'}]",
        "write_files: [{path: /x, encoding: gz, content: ''}]",
        "write_files: [{path: /x, permissions: 99999999999999999999}]",
        "runcmd: ['kubeadm init \"', \"kubeadm join '\", 'kubeadm init $(', 'é kubeadm join é']",
        "a: &a [*a]",
    ] {
        let _ = plan(Format::CloudConfig, odd.as_bytes(), &options);
        let _ = plan(Format::Ignition, odd.as_bytes(), &options);
    }
    for odd in [
        r#"{"ignition":{"version":"3"},"storage":{"files":[null]}}"#,
        r#"{"ignition":{"version":"3.1.0"},"storage":{"files":[{"path":"/x","mode":-1}]}}"#,
        r#"{"ignition":{"version":"3.1.0"},"storage":{"files":[{"path":"/x","mode":1.5}]}}"#,
        r#"{"ignition":{"version":"3.1.0"},"storage":{"files":[{"path":"/x","append":[null]}]}}"#,
        r#"{"ignition":{"version":"2.0.0"},"storage":{"files":[{"path":"/etc/kubeadm.yml","contents":{"source":"data:;base64,/w=="}}]}}"#,
        r#"{"ignition":{"version":"2.0.0"},"storage":{"files":[{"path":"/etc/kubeadm.sh","contents":{"source":"data:;base64,/w=="}}]}}"#,
        r#"{"ignition":{"version":"3.0.0"},"systemd":{"units":[{"name":"a","dropins":[{"name":""}]}]}}"#,
        r#"{"ignition":{"version":"é"}}"#,
        r#"{"ignition":{"version":"3.0.0"},"storage":{"files":[{"path":"/x","contents":{"source":"data:,%"}}]}}"#,
    ] {
        let _ = plan(Format::Ignition, odd.as_bytes(), &options);
    }
    // Deep nesting is refused by the parsers' limits, not by a stack overflow.
    let deep_yaml = format!("runcmd: {}", "[".repeat(100_000));
    assert!(plan(Format::CloudConfig, deep_yaml.as_bytes(), &options).is_err());
    let deep_json = format!("{{\"ignition\": {}", "[".repeat(100_000));
    assert!(plan(Format::Ignition, deep_json.as_bytes(), &options).is_err());
}
