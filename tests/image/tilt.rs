//! `tilt-provider.yaml` against what Cluster API v1.14.0's Tilt setup reads, and this repository's
//! `Tiltfile` run under Python with Tilt's functions stubbed (Tilt cannot be installed here; the
//! Tiltfile and `hack/tilt/envsubst.star` keep to the part of Starlark that Python runs alike).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::setup::repo_root;

/// Keys of a `tilt-provider.yaml` entry's `config` that Cluster API v1.14.0 reads (tag v1.14.0,
/// commit 560d4acf507bc7cac34b2da449fa5cd53eaeb149), with where:
///
/// `Tiltfile`:
/// - `context`: L166-169 (relative to the repository, default the repository);
/// - `go_main`: L170-171, L345 (default `main.go`; used only by the `go build`);
/// - `label`: L336, and L375 calls `label.lower()`, so the Tiltfile fails without it;
/// - `image`: L340-357 (set: a `go build` local_resource and a golang-based `docker_build`);
/// - `live_reload_deps`: L343 (the `go build`'s watched paths);
/// - `additional_docker_helper_commands`, `additional_docker_build_commands`: L354-355;
/// - `additional_resources`: L360-363; `additional_uncategorized_resources`: L365-366;
/// - `apply_provider_yaml`: L368 (default true); `resource_deps`: L379.
///
/// `hack/tools/internal/tilt-prepare/main.go` (`tiltProviderConfig`, L136-146, copied field by
/// field at L391-398): `context`, `version`, `live_reload_deps`, `apply_provider_yaml`,
/// `kustomize_folder`, `kustomize_options`. Its YAML decoding ignores unknown keys, so a
/// misspelt key (or an obsolete one, such as `kustomize_config` or `manager_name`) would be
/// silently without effect: hence this list.
const CONFIG_KEYS_READ: &[&str] = &[
    "context",
    "go_main",
    "label",
    "image",
    "live_reload_deps",
    "additional_docker_helper_commands",
    "additional_docker_build_commands",
    "additional_resources",
    "additional_uncategorized_resources",
    "apply_provider_yaml",
    "resource_deps",
    "version",
    "kustomize_folder",
    "kustomize_options",
];

/// Keys that must stay unset for a Rust provider whose image has no shell:
/// - `image`: Tiltfile L340-357 would `go build` this repository and build a golang image;
/// - `live_reload_deps`: tilt-prepare L819-822 would start the container with
///   `sh /start.sh /manager` (without it, and with no `debug` entry, the command is `/manager`);
/// - `go_main`, `additional_docker_*`: used only with `image`.
const CONFIG_KEYS_FORBIDDEN: &[&str] = &[
    "image",
    "live_reload_deps",
    "go_main",
    "additional_docker_helper_commands",
    "additional_docker_build_commands",
];

fn tilt_provider() -> (String, Value) {
    let text = std::fs::read_to_string(repo_root().join("tilt-provider.yaml")).unwrap();
    let value: Value = serde_saphyr::from_str(&text).expect("tilt-provider.yaml is YAML");
    (text, value)
}

#[test]
fn tilt_provider_yaml_sets_only_keys_cluster_api_reads() {
    let (text, provider) = tilt_provider();
    // tilt-prepare L414: a file starting with "[" or "-" is read as a list; this one is one
    // object (the Tiltfile, L161-162, accepts both).
    assert!(!text.starts_with('[') && !text.starts_with('-'));
    let top: BTreeSet<&str> = provider
        .as_object()
        .expect("one object")
        .keys()
        .map(String::as_str)
        .collect();
    // Tiltfile L164-165, tilt-prepare L132-133.
    assert_eq!(top, BTreeSet::from(["name", "config"]));
    assert_eq!(provider["name"], "docker-rs");

    let config = provider["config"].as_object().expect("config is an object");
    for key in config.keys() {
        assert!(
            CONFIG_KEYS_READ.contains(&key.as_str()),
            "config.{key} is read by neither Cluster API v1.14.0's Tiltfile nor tilt-prepare"
        );
        assert!(
            !CONFIG_KEYS_FORBIDDEN.contains(&key.as_str()),
            "config.{key} must not be set for capd-rs (see CONFIG_KEYS_FORBIDDEN)"
        );
    }
    assert_eq!(config["label"], "CAPDRS");

    // The Provider object's version (tilt-prepare L972): this crate's next release, ".99".
    let version = config["version"].as_str().expect("config.version");
    let (major, minor) = {
        let mut parts = env!("CARGO_PKG_VERSION").split('.');
        (parts.next().unwrap(), parts.next().unwrap())
    };
    assert_eq!(version, format!("v{major}.{minor}.99"));

    // tilt-prepare L361: relative to the context (the repository root here).
    assert!(!config.contains_key("context"));
    assert_eq!(config["kustomize_folder"], "config/default");
    assert!(
        config
            .get("apply_provider_yaml")
            .is_none_or(|v| v == &json!(true)),
        "tilt-prepare must render and the Tiltfile apply the provider's manifests"
    );
}

/// Runs `python3 <script> <args>`; `None` (after saying why) where python3 with PyYAML is
/// missing, which CI must have.
fn python(script: &str, args: &[&str]) -> Option<String> {
    let has_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_yaml {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs python3 with PyYAML to check the Tiltfile"
        );
        eprintln!("SKIPPED: python3 with PyYAML (python3-yaml) is not installed");
        return None;
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "python3 failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn envsubst_star_substitutes_as_clusterctl_does() {
    let script = r#"
import json, sys
ns = {}
exec(open(sys.argv[1]).read(), ns)
env = {"SET": "v", "EMPTY": ""}
cases = json.loads(sys.argv[2])
print(json.dumps([ns["envsubst"](c, env.get) for c in cases]))
"#;
    let cases = [
        ("a ${SET} b", "a v b"),
        ("${UNSET}", ""),
        ("${UNSET:=d}", "d"),
        ("${EMPTY:=d}", "d"),
        ("${SET:=d}", "v"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${UNSET=d}", "d"),
        ("${EMPTY=d}", ""),
        ("${UNSET-d}", "d"),
        ("${UNSET:=a=b-c}", "a=b-c"),
        (
            "--feature-gates=MachinePool=${EXP_MACHINE_POOL:=true},ClusterTopology=${CLUSTER_TOPOLOGY:=false}",
            "--feature-gates=MachinePool=true,ClusterTopology=false",
        ),
        ("value: ${CAPD_DOCKER_HOST:=\"\"}", "value: \"\""),
        (
            "not a name: ${1X} ${} ${A B}",
            "not a name: ${1X} ${} ${A B}",
        ),
        ("unclosed ${SET", "unclosed ${SET"),
        ("$SET $$ {SET}", "$SET $$ {SET}"),
    ];
    let inputs: Vec<&str> = cases.iter().map(|(input, _)| *input).collect();
    let star = repo_root().join("hack/tilt/envsubst.star");
    let Some(out) = python(
        script,
        &[
            star.to_str().unwrap(),
            &serde_json::to_string(&inputs).unwrap(),
        ],
    ) else {
        return;
    };
    let outputs: Vec<String> = serde_json::from_str(&out).unwrap();
    for ((input, expected), output) in cases.iter().zip(&outputs) {
        assert_eq!(output, expected, "envsubst({input:?})");
    }
}

/// Tilt's functions, stubbed in Python: each call is recorded; `kustomize` runs
/// `kubectl kustomize` on the directory given; `os.getenv` reads the environment given.
const TILT_STUBS: &str = r#"
import json, os as _os, subprocess, sys, yaml
repo, kustomize_dir, settings, env = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
calls = {}
def record(kind, **kw):
    calls.setdefault(kind, []).append(kw)
def load(path, *symbols):
    module = {}
    exec(open(_os.path.join(repo, path)).read(), module)
    for s in symbols:
        ns[s] = module[s]
def version_settings(**kw): record("version_settings", **kw)
def read_yaml(path, default=None):
    assert path == "./tilt-settings.yaml", path
    return settings
def allow_k8s_contexts(contexts): record("allow_k8s_contexts", contexts=contexts)
def local_resource(name, **kw): record("local_resource", name=name, **kw)
def kustomize(path):
    record("kustomize", path=path)
    return subprocess.run(["kubectl", "kustomize", kustomize_dir], check=True, capture_output=True, text=True).stdout
def decode_yaml_stream(text): return [d for d in yaml.safe_load_all(text) if d]
def encode_yaml_stream(objs): return yaml.safe_dump_all(objs)
def docker_build(ref, **kw): record("docker_build", ref=ref, **kw)
def k8s_yaml(text): record("k8s_yaml", objects=decode_yaml_stream(text))
def k8s_resource(**kw): record("k8s_resource", **kw)
def fail(message): raise SystemExit("fail(): " + message)
class _TiltOs:
    @staticmethod
    def getenv(key, default=None): return env.get(key, default)
ns = dict(load=load, version_settings=version_settings, read_yaml=read_yaml,
          allow_k8s_contexts=allow_k8s_contexts, local_resource=local_resource, kustomize=kustomize,
          decode_yaml_stream=decode_yaml_stream, encode_yaml_stream=encode_yaml_stream,
          docker_build=docker_build, k8s_yaml=k8s_yaml, k8s_resource=k8s_resource, fail=fail,
          os=_TiltOs)
exec(open(_os.path.join(repo, "Tiltfile")).read(), ns)
print(json.dumps(calls))
"#;

/// Runs the Tiltfile with `kustomize("config/default")` reading `kustomize_dir`.
fn run_tiltfile(kustomize_dir: &Path, settings: &Value, env: &Value) -> Option<Value> {
    let out = python(
        TILT_STUBS,
        &[
            repo_root().to_str().unwrap(),
            kustomize_dir.to_str().unwrap(),
            &settings.to_string(),
            &env.to_string(),
        ],
    )?;
    Some(serde_json::from_str(&out).unwrap())
}

fn only(calls: &Value, kind: &str) -> Value {
    let list = calls[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind}"));
    assert_eq!(list.len(), 1, "{kind}: {list:?}");
    list[0].clone()
}

/// The provider's Deployment and its `manager` container among the applied objects.
fn manager_of(objects: &Value) -> (Value, Value) {
    let deployment = objects
        .as_array()
        .unwrap()
        .iter()
        .find(|o| {
            o["kind"] == "Deployment"
                && !o["metadata"]["labels"]["cluster.x-k8s.io/provider"].is_null()
        })
        .expect("a Deployment labelled cluster.x-k8s.io/provider")
        .clone();
    let manager = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "manager")
        .expect("a container named manager")
        .clone();
    (deployment, manager)
}

/// What the Tiltfile must do with any provider bundle: build the binary with the script that
/// writes `.image/manager`, build the image from the Dockerfile's `prebuilt` stage under the
/// Deployment's image name, with no live update (no shell, no tar), and apply the manifests
/// with every variable substituted, after the binary is built.
fn check_tiltfile_run(calls: &Value) -> Value {
    let binary = only(calls, "local_resource");
    assert_eq!(binary["name"], "capdrs_binary");
    assert_eq!(binary["cmd"], "bash hack/static-manager.sh");
    assert!(binary["deps"].as_array().unwrap().contains(&json!("src")));
    let script = std::fs::read_to_string(repo_root().join("hack/static-manager.sh")).unwrap();
    assert!(script.contains(".image/manager"));

    assert_eq!(only(calls, "kustomize")["path"], "config/default");
    let objects = only(calls, "k8s_yaml")["objects"].clone();
    let rendered = objects.to_string();
    assert!(!rendered.contains("${"), "variables left: {rendered}");
    let (deployment, manager) = manager_of(&objects);

    let build = only(calls, "docker_build");
    let image = manager["image"].as_str().unwrap();
    let repository = image.split('@').next().unwrap();
    let repository = match repository.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => repository,
    };
    assert_eq!(
        build["ref"], repository,
        "Tilt injects its build by this name"
    );
    assert_eq!(build["context"], ".");
    assert_eq!(build["dockerfile"], "Dockerfile");
    assert_eq!(build["target"], "prebuilt");
    assert_eq!(build["only"], json!([".image/manager"]));
    assert!(
        build.get("live_update").is_none(),
        "the image has no shell or tar"
    );
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("AS prebuilt\nARG RUN_AS\nCOPY .image/manager /manager\n"));

    let resource = only(calls, "k8s_resource");
    assert_eq!(resource["workload"], deployment["metadata"]["name"]);
    assert_eq!(resource["resource_deps"], json!(["capdrs_binary"]));
    manager
}

#[test]
fn tiltfile_builds_the_image_and_applies_the_substituted_bundle() {
    let fixture = repo_root().join("tests/fixtures/tilt");
    let settings = json!({
        "kustomize_substitutions": {"CAPD_DOCKER_HOST": "unix:///run/docker.sock"},
        "extra_args": ["--v=4"],
        "run_as": "0:0",
    });
    let env = json!({"CLUSTER_TOPOLOGY": "true", "CAPD_DOCKER_HOST": "from the environment"});
    let Some(calls) = run_tiltfile(&fixture, &settings, &env) else {
        return;
    };
    let manager = check_tiltfile_run(&calls);
    assert_eq!(
        manager["args"],
        json!([
            "--leader-elect",
            "--feature-gates=MachinePool=true,ClusterTopology=true",
            "--v=4"
        ]),
        "defaults, the environment, then extra_args"
    );
    assert_eq!(
        manager["env"][0]["value"], "unix:///run/docker.sock",
        "kustomize_substitutions win over the environment"
    );
    assert_eq!(
        only(&calls, "docker_build")["ref"],
        "example.com/capd-rs/manager"
    );
    assert_eq!(only(&calls, "docker_build")["build_args"]["RUN_AS"], "0:0");
}

#[test]
fn tiltfile_works_with_the_repositorys_config_default() {
    let config = repo_root().join("config/default");
    if !config.join("kustomization.yaml").exists() {
        // The kustomize bundle is written in parallel; once merged, this test covers it.
        eprintln!("SKIPPED: config/default/kustomization.yaml is not in this tree yet");
        return;
    }
    let Some(calls) = run_tiltfile(&config, &json!({}), &json!({})) else {
        return;
    };
    check_tiltfile_run(&calls);
    let objects = only(&calls, "k8s_yaml")["objects"].clone();
    // tilt-prepare (getProviderObj, L913-935) needs a Namespace labelled with the provider.
    let namespace = objects
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Namespace")
        .expect("config/default has a Namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["cluster.x-k8s.io/provider"],
        "infrastructure-docker-rs"
    );
}
