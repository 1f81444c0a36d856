//! The clusterctl packaging: the kustomize bundle (`config/default`) as clusterctl would install
//! it, the release script, the cluster templates and ClusterClass, the README's variables, and
//! the local webhook certificates of `certs/`. What can be checked without clusterctl, core
//! Cluster API or cert-manager is checked here: names, labels and namespace, the manager's
//! arguments read by its own flag parser, server-side dry runs against the test apiserver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use capd::features::Features;
use capd::flags::Flags;
use serde_json::Value;

use crate::support::bundle::{build_components, documents, find, kind, name, rendered_components};
use crate::support::control_plane::start_extra_async;
use crate::support::envsubst::{self, Variable};
use crate::support::setup::{Tool, repo_root, tools};
use crate::support::webhook::{Pki, Registration, WebhookServer, wait_until_active};
use crate::support::{TestContext, crds, kubectl_async, wait_for};

const NAMESPACE: &str = "capd-rs-system";
const PROVIDER_LABEL: (&str, &str) = ("cluster.x-k8s.io/provider", "infrastructure-docker-rs");
const CONTRACT_LABEL: (&str, &str) = ("cluster.x-k8s.io/v1beta2", "v1beta2");
const DEPLOYMENT: &str = "capd-rs-controller-manager";
const CERT_SECRET: &str = "capd-rs-webhook-service-cert";
const CERT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";

/// Cluster-scoped kinds in the bundle; every other object must be in the provider namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// Runs `command` in the repository; returns (success, stdout, stderr).
fn run(command: &mut Command) -> (bool, String, String) {
    let out = command
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The manager container of the Deployment.
fn manager_container(docs: &[Value]) -> &Value {
    let deployment = find(docs, "Deployment", DEPLOYMENT);
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    assert_eq!(containers[0]["name"], "manager");
    &containers[0]
}

/// The manager's flags, as its own parser reads the container's command line.
fn manager_flags(docs: &[Value]) -> Flags {
    let container = manager_container(docs);
    assert_eq!(container["command"], serde_json::json!(["/manager"]));
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args").to_owned())
        .collect();
    let parsed = Flags::parse_args(std::iter::once("/manager".to_owned()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("the Deployment's args {args:?} do not parse: {e}"));
    assert!(
        parsed.no_effect.is_empty(),
        "the Deployment passes flags that do nothing: {:?}",
        parsed.no_effect
    );
    parsed.flags
}

#[test]
fn envsubst_substitutes_as_clusterctl() {
    let values = HashMap::from([("SET", "v"), ("EMPTY", "")]);
    let render = |t: &str| envsubst::substitute(t, &values);
    assert_eq!(render("a ${SET} b").unwrap(), "a v b");
    assert_eq!(render("${ SET }").unwrap(), "v");
    assert_eq!(
        render("${UNSET:=d}|${EMPTY:=d}|${EMPTY=d}").unwrap(),
        "d|d|"
    );
    assert_eq!(render("${UNSET:-[\"x\"]}").unwrap(), "[\"x\"]");
    assert_eq!(render("${UNSET:=\"\"}").unwrap(), "\"\"");
    assert_eq!(render("$SET $$ $${SET} ${").unwrap(), "$SET $ ${SET} ${");
    assert_eq!(
        render("${A} ${B:=1} ${A} ${C}").unwrap_err(),
        "value for variables [A, C] is not set"
    );
    let vars = envsubst::variables("${A:=1} $$ ${B} $C");
    assert_eq!(
        vars.iter()
            .map(|v| (v.name.as_str(), v.default.as_deref()))
            .collect::<Vec<_>>(),
        vec![("A", Some("1")), ("B", None)]
    );
}

#[test]
fn components_have_the_names_labels_and_namespace_clusterctl_needs() {
    let text = build_components();
    assert!(
        !text.contains("$$"),
        "clusterctl would turn `$$` into `$` in the components"
    );
    let docs = rendered_components(&[]);

    // Exactly one Namespace (clusterctl's target namespace), privileged for the hostPath mount.
    let namespaces: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Namespace").collect();
    assert_eq!(namespaces.len(), 1, "exactly one Namespace");
    assert_eq!(name(namespaces[0]), NAMESPACE);
    for mode in ["enforce", "warn", "audit"] {
        assert_eq!(
            namespaces[0]["metadata"]["labels"][format!("pod-security.kubernetes.io/{mode}")],
            "privileged"
        );
    }

    let mut seen = BTreeSet::new();
    for doc in &docs {
        let (kind, name) = (kind(doc), name(doc));
        assert!(seen.insert((kind, name)), "{kind} {name} twice");
        assert_eq!(
            doc["metadata"]["labels"][PROVIDER_LABEL.0], PROVIDER_LABEL.1,
            "{kind} {name} lacks the provider label"
        );
        if CLUSTER_SCOPED.contains(&kind) {
            assert!(
                doc["metadata"].get("namespace").is_none(),
                "{kind} {name} is cluster-scoped"
            );
        } else {
            assert_eq!(
                doc["metadata"]["namespace"], NAMESPACE,
                "{kind} {name} is not in {NAMESPACE}"
            );
        }
        if !matches!(kind, "CustomResourceDefinition" | "Namespace") {
            assert!(
                name.starts_with("capd-rs-"),
                "{kind} {name} lacks the capd-rs- prefix"
            );
        }
    }

    // The CRDs: exactly the Rust types', each with the contract label.
    let crds: BTreeSet<&str> = docs
        .iter()
        .filter(|d| kind(d) == "CustomResourceDefinition")
        .map(|d| {
            assert_eq!(
                d["metadata"]["labels"][CONTRACT_LABEL.0],
                CONTRACT_LABEL.1,
                "CRD {} lacks the contract label",
                name(d)
            );
            name(d)
        })
        .collect();
    let expected: Vec<String> = capd::api::crds::all_crds()
        .unwrap()
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(
        crds,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );

    // Webhooks: the CA injected from the Certificate, the Service in the provider namespace.
    let certificate = find(&docs, "Certificate", "capd-rs-serving-cert");
    for (kind, name) in [
        (
            "MutatingWebhookConfiguration",
            "capd-rs-mutating-webhook-configuration",
        ),
        (
            "ValidatingWebhookConfiguration",
            "capd-rs-validating-webhook-configuration",
        ),
    ] {
        let config = find(&docs, kind, name);
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{NAMESPACE}/capd-rs-serving-cert"),
            "{kind}"
        );
        for webhook in config["webhooks"].as_array().unwrap() {
            assert_eq!(
                webhook["clientConfig"]["service"]["name"],
                "capd-rs-webhook-service"
            );
            assert_eq!(webhook["clientConfig"]["service"]["namespace"], NAMESPACE);
        }
    }
    let service = find(&docs, "Service", "capd-rs-webhook-service");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook-server");

    // The Certificate: dnsNames with `.<namespace>.` (clusterctl retargets them), its Secret
    // the one the Deployment mounts, its Issuer in the bundle.
    let dns: Vec<&str> = certificate["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(
        dns,
        [
            "capd-rs-webhook-service.capd-rs-system.svc",
            "capd-rs-webhook-service.capd-rs-system.svc.cluster.local"
        ]
    );
    assert!(dns.iter().all(|n| n.contains(&format!(".{NAMESPACE}."))));
    assert_eq!(certificate["spec"]["secretName"], CERT_SECRET);
    find(
        &docs,
        "Issuer",
        certificate["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );

    // The Deployment: the Service selects its pods; the webhook certificate is mounted where
    // the manager reads it; CAPD's ports, probes and Docker socket; a hardened container.
    let deployment = find(&docs, "Deployment", DEPLOYMENT);
    let pod = &deployment["spec"]["template"];
    let selector = service["spec"]["selector"].as_object().unwrap();
    assert!(selector.contains_key(PROVIDER_LABEL.0));
    for (key, value) in selector {
        assert_eq!(&pod["metadata"]["labels"][key], value, "selector {key}");
    }
    let spec = &pod["spec"];
    let container = manager_container(&docs);
    let ports: BTreeMap<&str, i64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([
            ("healthz", 9440),
            ("metrics", 8443),
            ("webhook-server", 9443)
        ])
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let volume = |name: &str| {
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    let mount = |path: &str| {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
            .clone()
    };
    let cert_mount = mount(CERT_DIR);
    assert_eq!(cert_mount["readOnly"], true);
    assert_eq!(
        volume(cert_mount["name"].as_str().unwrap())["secret"]["secretName"],
        CERT_SECRET
    );
    let socket = mount("/var/run/docker.sock");
    assert_eq!(
        volume(socket["name"].as_str().unwrap())["hostPath"]["path"],
        "/var/run/docker.sock"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(env["DOCKER_HOST"]["value"], "", "empty: the mounted socket");

    // RBAC: bound to the Deployment's ServiceAccount; the Lease rule names the manager's Lease.
    let account = spec["serviceAccountName"].as_str().unwrap();
    find(&docs, "ServiceAccount", account);
    for binding in docs
        .iter()
        .filter(|d| matches!(kind(d), "ClusterRoleBinding" | "RoleBinding"))
    {
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        find(
            &docs,
            role_kind,
            binding["roleRef"]["name"].as_str().unwrap(),
        );
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}])
        );
    }
    let lease_role = find(&docs, "Role", "capd-rs-leader-election-role");
    assert!(
        lease_role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resourceNames"] == serde_json::json!([capd::leader::LEASE_NAME])),
        "the leader election Role does not name {}",
        capd::leader::LEASE_NAME
    );
}

#[test]
fn the_deployment_arguments_parse_with_the_managers_own_flags() {
    // clusterctl's defaults (no variable set).
    let docs = rendered_components(&[]);
    let flags = manager_flags(&docs);
    assert!(flags.leader_elect);
    assert!(!flags.insecure_diagnostics);
    assert_eq!(flags.diagnostics_address, ":8443".parse().unwrap());
    assert_eq!(flags.features(), Features::default());
    assert_eq!(flags.docker_network, "kind");
    assert!(flags.privileged_nodes);
    let grace = find(&docs, "Deployment", DEPLOYMENT)["spec"]["template"]["spec"]
        ["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert_eq!(grace, 10);
    assert!(
        flags.graceful_shutdown_timeout < Duration::from_secs(grace),
        "--graceful-shutdown-timeout must end before the kubelet's SIGKILL"
    );
    assert_eq!(
        (flags.webhook_port, flags.webhook_cert_dir.as_path()),
        (9443, Path::new(CERT_DIR)),
        "the webhook server must listen on the webhook-server port and read the mounted Secret"
    );

    // Every variable set.
    let docs = rendered_components(&[
        ("CAPD_RS_DIAGNOSTICS_ADDRESS", "127.0.0.1:9090"),
        ("CAPD_RS_INSECURE_DIAGNOSTICS", "true"),
        ("CLUSTER_TOPOLOGY", "true"),
        ("CAPD_RS_DOCKER_NETWORK", "capd"),
        ("CAPD_RS_PRIVILEGED_NODES", "false"),
        ("CAPD_RS_DOCKER_HOST", "tcp://docker:2375"),
    ]);
    let flags = manager_flags(&docs);
    assert!(flags.insecure_diagnostics);
    assert_eq!(flags.diagnostics_address, "127.0.0.1:9090".parse().unwrap());
    assert!(flags.features().cluster_topology);
    assert_eq!(flags.docker_network, "capd");
    assert!(!flags.privileged_nodes);
    let env = manager_container(&docs)["env"].as_array().unwrap().clone();
    assert!(
        env.iter()
            .any(|e| e["name"] == "DOCKER_HOST" && e["value"] == "tcp://docker:2375")
    );
}

/// `objects` as one `v1` List, for kubectl.
fn list(objects: &[&Value]) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string()
}

#[tokio::test]
async fn released_components_pass_a_server_side_dry_run() {
    // A control plane of its own with cert-manager's CRDs, so the Issuer and Certificate are
    // checked too, and the provider's namespace exists as `clusterctl init` would have made it.
    let cp = start_extra_async().await.unwrap();
    let cert_manager = tokio::task::spawn_blocking(|| tools(Tool::CertManager))
        .await
        .unwrap()
        .expect("cert-manager's CRDs");
    let cert_manager_crds = crds::read_dir(&cert_manager.join("cert-manager/crds")).unwrap();
    crds::apply_and_wait(&cp.client().await.unwrap(), &cert_manager_crds)
        .await
        .unwrap();
    let (ok, _, err) = cp
        .kubectl_async(&["create", "namespace", NAMESPACE], "")
        .await;
    assert!(ok, "{err}");

    let out = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(Command::new("bash")
        .args(["hack/release.sh", "v0.1.0", "example.org/capd-rs"])
        .env("OUT", out.path()));
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(out.path().join("infrastructure-components.yaml")).unwrap();
    let docs = documents(&envsubst::substitute(&text, &HashMap::new()).unwrap());
    for wanted in [
        "Issuer",
        "Certificate",
        "CustomResourceDefinition",
        "Deployment",
    ] {
        assert!(docs.iter().any(|d| kind(d) == wanted), "no {wanted}");
    }
    let all: Vec<&Value> = docs.iter().collect();
    let (ok, applied, err) = cp
        .kubectl_async(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=capd-rs-packaging-test",
                "--dry-run=server",
                "-f",
                "-",
            ],
            &list(&all),
        )
        .await;
    assert!(
        ok,
        "server-side dry run of the components:\n{err}\n{applied}"
    );
    // kubectl names each object it applied.
    for doc in &docs {
        let name = name(doc);
        assert!(
            applied.contains(&format!("/{name} serverside-applied")),
            "{} {name} was not applied:\n{applied}",
            kind(doc)
        );
    }
}

/// Runs `hack/release.sh` with `args`, `OUT` set to `out`.
fn release(args: &[&str], out: &Path) -> (bool, String, String) {
    run(Command::new("bash")
        .arg("hack/release.sh")
        .args(args)
        .env("OUT", out)
        .env_remove("VERSION")
        .env_remove("IMAGE"))
}

/// The files of `dir`, by name.
fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// templates/'s files (every flavor and ClusterClass), by name.
fn template_files() -> BTreeSet<String> {
    let names = files(&repo_root().join("templates"));
    assert!(names.contains("cluster-template.yaml"));
    assert!(names.iter().any(|n| n.starts_with("clusterclass-")));
    names
}

#[test]
fn the_release_script_writes_the_components_metadata_and_templates() {
    let out = tempfile::tempdir().unwrap();
    let (ok, stdout, err) = release(&["v0.1.7", "registry.example.org:5000/capd-rs"], out.path());
    assert!(ok, "{err}");
    let mut expected = template_files();
    expected.extend([
        "infrastructure-components.yaml".into(),
        "metadata.yaml".into(),
    ]);
    assert_eq!(files(out.path()), expected);
    // It names every file it wrote, and only those.
    let listed: BTreeSet<String> = stdout.lines().map(str::to_owned).collect();
    let written: BTreeSet<String> = expected
        .iter()
        .map(|f| out.path().join(f).display().to_string())
        .collect();
    assert_eq!(listed, written);

    // The image: the release's, tagged with the version; nothing else changed.
    let components =
        std::fs::read_to_string(out.path().join("infrastructure-components.yaml")).unwrap();
    assert!(
        components.contains("image: registry.example.org:5000/capd-rs:v0.1.7\n"),
        "{components}"
    );
    assert_eq!(
        components.replace(
            "registry.example.org:5000/capd-rs:v0.1.7",
            "capd-rs-manager:dev"
        ),
        build_components()
    );
    for file in &expected {
        let source = match file.as_str() {
            "infrastructure-components.yaml" => continue,
            "metadata.yaml" => repo_root().join("metadata.yaml"),
            template => repo_root().join("templates").join(template),
        };
        assert_eq!(
            std::fs::read(out.path().join(file)).unwrap(),
            std::fs::read(source).unwrap(),
            "{file}"
        );
    }

    // A tag or digest given with the image is kept.
    let (ok, _, err) = release(&["v0.1.7", "example.org/capd-rs:candidate"], out.path());
    assert!(ok, "{err}");
    let components =
        std::fs::read_to_string(out.path().join("infrastructure-components.yaml")).unwrap();
    assert!(components.contains("image: example.org/capd-rs:candidate\n"));
    let digest = format!("example.org/capd-rs@sha256:{}", "ab".repeat(32));
    let (ok, _, err) = release(&["v0.1.7", &digest], out.path());
    assert!(ok, "{err}");
    let components =
        std::fs::read_to_string(out.path().join("infrastructure-components.yaml")).unwrap();
    assert!(components.contains(&format!("image: {digest}\n")));

    // The same from the environment, into a clusterctl local repository.
    let repository = tempfile::tempdir().unwrap();
    let (ok, stdout, err) = run(Command::new("bash")
        .args(["hack/release.sh", "--local-repository"])
        .arg(repository.path())
        .env("VERSION", "v0.1.8")
        .env("IMAGE", "example.org/capd-rs"));
    assert!(ok, "{err}");
    let version_dir = repository.path().join("infrastructure-docker-rs/v0.1.8");
    assert_eq!(files(&version_dir), expected);
    let components =
        std::fs::read_to_string(version_dir.join("infrastructure-components.yaml")).unwrap();
    assert!(components.contains("image: example.org/capd-rs:v0.1.8\n"));
    let config = repository.path().join("clusterctl.yaml");
    assert!(stdout.lines().any(|l| Path::new(l) == config), "{stdout}");
    let config: Value = serde_saphyr::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(
        config["providers"],
        serde_json::json!([{
            "name": "docker-rs",
            "type": "InfrastructureProvider",
            "url": version_dir.join("infrastructure-components.yaml").display().to_string(),
        }])
    );
}

#[test]
fn the_release_script_refuses_versions_clusterctl_cannot_use() {
    let out = tempfile::tempdir().unwrap();
    for (version, message) in [
        ("0.1.0", "is not a v-prefixed semantic version"),
        ("v0.1", "is not a v-prefixed semantic version"),
        ("v0.01.0", "is not a v-prefixed semantic version"),
        ("latest", "is not a v-prefixed semantic version"),
        ("v0.9.0", "has no release series 0.9 in metadata.yaml"),
        ("v1.0.0-rc.1", "has no release series 1.0 in metadata.yaml"),
    ] {
        let (ok, _, err) = release(&[version, "example.org/capd-rs"], out.path());
        assert!(!ok, "{version} was accepted");
        assert!(err.contains(message), "{version}: {err}");
    }
    assert!(
        files(out.path()).is_empty(),
        "a refused release wrote files"
    );
    let (ok, _, err) = release(&["v0.1.0"], out.path());
    assert!(!ok && err.contains("VERSION and IMAGE are needed"), "{err}");
    // Pre-releases and build metadata of a known series are fine.
    let (ok, _, err) = release(&["v0.1.0-rc.1+build.7", "example.org/capd-rs"], out.path());
    assert!(ok, "{err}");
    let components =
        std::fs::read_to_string(out.path().join("infrastructure-components.yaml")).unwrap();
    assert!(
        components.contains("image: example.org/capd-rs:v0.1.0-rc.1_build.7\n"),
        "a tag cannot hold '+'"
    );
}

/// The rows of the README's "Variables" section: variable name to the default column.
fn documented_variables() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Variables\n"))
        .expect("a README section \"Variables\"");
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().strip_prefix('|')?.split(" | ").collect();
            let name = cells.first()?.trim().strip_prefix('`')?.strip_suffix('`')?;
            let variable = name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            variable.then(|| Some((name.to_owned(), cells.get(1)?.trim().to_owned())))?
        })
        .collect()
}

#[test]
fn every_variable_is_documented_in_the_readme_with_its_default() {
    let documented = documented_variables();
    let mut sources = vec![("config/default".to_owned(), build_components())];
    for file in template_files() {
        let text = std::fs::read_to_string(repo_root().join("templates").join(&file)).unwrap();
        sources.push((format!("templates/{file}"), text));
    }
    let mut used = BTreeSet::new();
    for (source, text) in &sources {
        for Variable { name, default, .. } in envsubst::variables(text) {
            let cell = documented
                .get(&name)
                .unwrap_or_else(|| panic!("{name} ({source}) is not in the README's Variables"));
            let expected = match &default {
                Some(d) => format!("`{d}`"),
                None => "none".to_owned(),
            };
            assert!(
                cell == &expected || (default.is_none() && cell.starts_with("none")),
                "{name} in {source} defaults to {default:?}, the README says {cell}"
            );
            used.insert(name);
        }
        if source.contains("clusterclass-") {
            assert!(
                envsubst::variables(text).is_empty(),
                "{source}: ClusterClass files should have no variables"
            );
        }
    }
    let unused: Vec<&String> = documented.keys().filter(|k| !used.contains(*k)).collect();
    assert!(unused.is_empty(), "documented but never used: {unused:?}");
}

/// A template rendered as `clusterctl generate cluster` would, into `namespace`: defaults
/// for the variables that have one, and the values clusterctl (or the user) gives the others.
fn render_template(file: &str, namespace: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("templates").join(file)).unwrap();
    let values = HashMap::from([
        ("CLUSTER_NAME", "demo"),
        ("NAMESPACE", namespace),
        ("KUBERNETES_VERSION", "v1.35.5"),
    ]);
    documents(&envsubst::substitute(&text, &values).unwrap_or_else(|e| panic!("{file}: {e}")))
}

/// The `{apiGroup or apiVersion, kind, name}` references of `doc` to other objects.
fn references(doc: &Value) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    fn walk(value: &Value, refs: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                if let (Some(kind), Some(name)) = (map.get("kind"), map.get("name"))
                    && (map.contains_key("apiGroup") || map.contains_key("apiVersion"))
                    && map.get("metadata").is_none()
                {
                    refs.push((
                        kind.as_str().unwrap().to_owned(),
                        name.as_str().unwrap().to_owned(),
                    ));
                }
                map.values().for_each(|v| walk(v, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    walk(&doc["spec"], &mut refs);
    refs
}

#[tokio::test]
async fn templates_render_and_their_docker_objects_pass_a_server_side_dry_run() {
    let ctx = TestContext::new("pkg-templates").await;
    crds::install(&ctx.kube).await;
    // The webhooks judge the objects too, with ClusterTopology on (the ClusterClass needs it).
    let pki = Pki::mint("pkg-templates-ca");
    let server = WebhookServer::start(
        &pki,
        Features {
            cluster_topology: true,
        },
    );
    let _registration = Registration::register(&ctx, server.port, &pki.ca_pem);
    wait_until_active(&ctx.namespace).await;

    let classes: Vec<Value> = template_files()
        .iter()
        .filter(|f| f.starts_with("clusterclass-"))
        .flat_map(|f| render_template(f, &ctx.namespace))
        .collect();
    for file in template_files() {
        let docs = render_template(&file, &ctx.namespace);
        let mut kinds: Vec<&str> = docs.iter().map(kind).collect();
        kinds.sort_unstable();
        let expected: &[&str] = match file.as_str() {
            "cluster-template.yaml" => &[
                "Cluster",
                "DockerCluster",
                "DockerMachineTemplate",
                "DockerMachineTemplate",
                "KubeadmConfigTemplate",
                "KubeadmControlPlane",
                "MachineDeployment",
            ],
            "cluster-template-topology.yaml" => &["Cluster"],
            "clusterclass-quick-start.yaml" => &[
                "ClusterClass",
                "DockerClusterTemplate",
                "DockerMachineTemplate",
                "DockerMachineTemplate",
                "KubeadmConfigTemplate",
                "KubeadmControlPlaneTemplate",
            ],
            other => panic!("no expectations for templates/{other}"),
        };
        assert_eq!(kinds, expected, "{file}");
        for doc in &docs {
            // Templates put everything in the target namespace; ClusterClass files nowhere.
            let namespace = doc["metadata"].get("namespace");
            if file.starts_with("clusterclass-") {
                assert!(namespace.is_none(), "{file}: {} is namespaced", name(doc));
            } else {
                assert_eq!(namespace, Some(&Value::from(ctx.namespace.clone())));
            }
            // Every reference resolves in the file (or, for a topology, to the ClusterClass).
            for (kind_, name_) in references(doc) {
                assert!(
                    docs.iter()
                        .chain(&classes)
                        .any(|d| kind(d) == kind_ && name(d) == name_),
                    "{file}: {} {} refers to a missing {kind_} {name_}",
                    kind(doc),
                    name(doc)
                );
            }
            if let Some(class) = doc["spec"]["topology"]["classRef"]["name"].as_str() {
                assert!(
                    classes
                        .iter()
                        .any(|d| kind(d) == "ClusterClass" && name(d) == class),
                    "{file}: no ClusterClass {class}"
                );
            }
        }

        // capd-rs's own objects go through the apiserver (schema) and the webhooks.
        let ours: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                d["apiVersion"]
                    .as_str()
                    .unwrap()
                    .starts_with("infrastructure.cluster.x-k8s.io/")
            })
            .collect();
        if ours.is_empty() {
            continue;
        }
        let (ok, out, err) = kubectl_async(
            &["apply", "--dry-run=server", "-n", &ctx.namespace, "-f", "-"],
            &list(&ours),
        )
        .await;
        assert!(ok, "{file}: {err}");
        assert_eq!(
            out.lines().count(),
            ours.len(),
            "{file}: every object applied:\n{out}"
        );
    }
}

/// The CA and serving pair `certs/generate.sh` wrote to `dir`, as PEM.
fn read_pki(dir: &Path) -> Pki {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    Pki {
        ca_pem: read("ca.crt"),
        cert_pem: read("tls.crt"),
        key_pem: read("tls.key"),
    }
}

fn generate_certs(dir: &Path) {
    let (ok, out, err) = run(Command::new("bash").arg("certs/generate.sh").arg(dir));
    assert!(ok, "certs/generate.sh: {err}");
    assert_eq!(PathBuf::from(out.trim()), dir);
}

#[tokio::test]
async fn local_certificates_are_trusted_by_the_apiserver_and_rotate_in_place() {
    let ctx = TestContext::new("pkg-certs").await;
    crds::install(&ctx.kube).await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("webhook-certs");
    generate_certs(&certs);
    for file in ["ca.key", "tls.key"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(certs.join(file)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{file} is readable by others");
    }
    let first = read_pki(&certs);
    // The webhook server reads the directory as the manager does (--webhook-cert-dir), and the
    // apiserver, given the CA, calls it.
    let server = WebhookServer::start_in_dir(&certs, Features::default());
    let _registration = Registration::register(&ctx, server.port, &first.ca_pem);
    wait_until_active(&ctx.namespace).await;
    assert_eq!(
        served_certificate(server.port).await.as_deref(),
        Some(first.cert_pem.trim())
    );

    // Run again: a new serving pair from the same CA, served without a restart; the apiserver,
    // which trusts only the CA, keeps calling.
    generate_certs(&certs);
    let second = read_pki(&certs);
    assert_eq!(second.ca_pem, first.ca_pem, "the CA is kept");
    assert_ne!(second.cert_pem, first.cert_pem, "a new serving certificate");
    wait_for(
        "the new certificate to be served",
        Duration::from_secs(10),
        || async {
            (served_certificate(server.port).await.as_deref() == Some(second.cert_pem.trim()))
                .then_some(())
        },
    )
    .await;
    wait_until_active(&ctx.namespace).await;

    // Nothing generated under certs/ would be committed.
    let (ok, _, _) = run(Command::new("git").args(["check-ignore", "-q", "certs/tls.key"]));
    assert!(ok, "certs/.gitignore must ignore generated keys");
    let (ok, _, _) = run(Command::new("git").args(["check-ignore", "-q", "certs/generate.sh"]));
    assert!(!ok, "certs/generate.sh must stay tracked");
}

/// The leaf certificate (PEM) the TLS server on loopback `port` presents, or `None` when the
/// handshake fails.
async fn served_certificate(port: u16) -> Option<String> {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "localhost"])
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .ok()?
    .ok()?;
    let out = String::from_utf8_lossy(&out.stdout);
    const END: &str = "-----END CERTIFICATE-----";
    let begin = out.find("-----BEGIN CERTIFICATE-----")?;
    let end = out.find(END)? + END.len();
    Some(out[begin..end].to_owned())
}
