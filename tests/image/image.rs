//! The image `hack/image.sh` builds: small, static, non-root, nothing but `/manager`, and a
//! manager that runs from it against the test apiserver and the Docker engine.

use std::collections::HashMap;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::manager::free_port;
use crate::support::setup::repo_root;
use crate::support::webhook::Pki;
use crate::support::{TestContext, control_plane, crds, http_get};

/// The tag the tests build (not the default `capd-rs-manager:dev`, which is the user's).
const IMAGE: &str = "capd-rs-test/manager:local";
/// The size the image must stay within (CAPD's v1.14.0 image is about 113 MB).
const MAX_IMAGE_BYTES: u64 = 20_000_000;
/// The UID:GID the image runs as (distroless's "nonroot", as Cluster API's images).
const USER: &str = "65532:65532";

/// Builds the image once per test binary with `hack/image.sh`, and returns its name.
fn image() -> &'static str {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(repo_root().join("hack/image.sh"))
            .arg(IMAGE)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running hack/image.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "hack/image.sh failed ({}): see its messages above",
                out.status
            ));
        }
        eprintln!("hack/image.sh took {:.0?}", started.elapsed());
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    match built {
        Ok(name) => name,
        Err(e) => panic!("{e}"),
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("running the docker CLI")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hack_image_sh_prints_the_image_it_built() {
    assert_eq!(image(), IMAGE);
}

#[test]
fn the_image_is_small_and_runs_the_manager_as_non_root() {
    let inspect: Value = serde_json::from_str(&docker_ok(&["image", "inspect", image()])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], USER);
    let uid: u32 = USER.split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "the image must not run as root");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/manager"]));
    assert!(config["Cmd"].is_null(), "no default arguments: {config}");

    let size = inspect[0]["Size"].as_u64().unwrap();
    eprintln!("{IMAGE}: {size} bytes");
    assert!(
        size <= MAX_IMAGE_BYTES,
        "the image is {size} bytes, more than {MAX_IMAGE_BYTES}"
    );
}

/// The image's files: every layer of `docker save`, unpacked in order. Exact, unlike
/// `docker export`, which also lists what the engine adds to a container (/etc/hosts, /dev, ...).
fn image_files() -> HashMap<String, (tar::EntryType, u32, u64, Vec<u8>)> {
    let saved = Command::new("docker")
        .args(["save", image()])
        .stderr(Stdio::inherit())
        .output()
        .expect("docker save");
    assert!(saved.status.success());
    let mut entries: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(&saved.stdout[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.insert(path, data);
    }
    let manifest: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let mut files = HashMap::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let layer = &entries[layer.as_str().unwrap()];
        let mut archive = tar::Archive::new(&layer[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(
                path,
                (
                    header.entry_type(),
                    header.mode().unwrap(),
                    header.uid().unwrap(),
                    data,
                ),
            );
        }
    }
    files
}

/// The types of an ELF64 little-endian file's program headers.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count)
        .map(|i| {
            let at = phoff + i * size;
            u32::from_le_bytes(elf[at..at + 4].try_into().unwrap())
        })
        .collect()
}

#[test]
fn the_image_holds_only_a_static_manager_owned_by_root() {
    let files = image_files();
    let mut paths: Vec<&String> = files.keys().collect();
    paths.sort();
    assert_eq!(paths, ["manager"], "the image's files");

    let (kind, mode, uid, elf) = &files["manager"];
    assert_eq!(*kind, tar::EntryType::Regular);
    assert_eq!(mode & 0o777, 0o755, "mode {mode:o}");
    assert_eq!(
        *uid, 0,
        "owned by root: the manager (UID 65532) cannot rewrite itself"
    );
    const PT_INTERP: u32 = 3;
    assert!(
        !program_header_types(elf).contains(&PT_INTERP),
        "/manager asks for a dynamic loader, which the image does not have"
    );
}

#[test]
fn help_from_the_image_is_the_managers() {
    let out = docker(&["run", "--rm", image(), "--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker run --help: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Usage: manager [OPTIONS]"), "{stdout}");
    assert!(stdout.contains("--leader-elect"), "{stdout}");
    // With the image's empty environment: clap's help shows the values of env-backed flags
    // (CAPD_DOCKER_NETWORK), which hack/lib.sh exports for the tests.
    let host = Command::new(env!("CARGO_BIN_EXE_manager"))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        stdout,
        String::from_utf8_lossy(&host.stdout),
        "the image's manager and this build's differ"
    );
}

/// The Docker engine's Unix socket (DOCKER_HOST or the default).
fn docker_socket() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host.strip_prefix("unix://").map(PathBuf::from),
        _ => Some(PathBuf::from("/var/run/docker.sock")),
    }
}

/// Runs the image detached on the host network, as a Deployment runs it: the kubeconfig and
/// webhook certificate mounted, the Docker socket at its usual place; then `args`.
fn run_detached(name: &str, extra: &[&str], mounts: &Mounts, args: &[String]) {
    let mut all: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "-e",
        "KUBECONFIG=/kubeconfig",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(extra.iter().map(|s| s.to_string()));
    for (host, container) in [
        (&mounts.kubeconfig, "/kubeconfig"),
        (&mounts.certs, "/tmp/k8s-webhook-server/serving-certs"),
        (&mounts.socket, "/var/run/docker.sock"),
    ] {
        all.push("-v".into());
        all.push(format!("{}:{container}:ro", host.display()));
    }
    all.push(image().to_owned());
    all.extend(args.iter().cloned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    docker_ok(&all);
}

struct Mounts {
    kubeconfig: PathBuf,
    certs: PathBuf,
    socket: PathBuf,
}

fn logs(name: &str) -> String {
    let out = docker(&["logs", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_runs_from_the_image_given_the_docker_sockets_group() {
    tokio::task::spawn_blocking(image).await.unwrap();
    let ctx = TestContext::new("image-run").await;
    crds::install(&ctx.kube).await;
    let Some(socket) = docker_socket() else {
        eprintln!("SKIPPED: DOCKER_HOST is not a Unix socket; the image cannot be given it");
        return;
    };
    let meta = std::fs::metadata(&socket).expect("the Docker socket");
    let (gid, mode) = (meta.gid(), meta.mode());

    // The webhook certificate, readable by UID 65532 (the directory is a tempdir, 0700).
    let certs = tempfile::tempdir().unwrap();
    Pki::mint("image-ca").install(certs.path());
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mounts = Mounts {
        kubeconfig: control_plane::control_plane().kubeconfig.clone(),
        certs: certs.path().to_owned(),
        socket,
    };
    let health = free_port();
    let args = vec![
        format!("--namespace={}", ctx.namespace),
        format!("--webhook-port={}", free_port()),
        format!("--health-addr=127.0.0.1:{health}"),
        format!("--diagnostics-address=127.0.0.1:{}", free_port()),
        "--privileged-nodes=false".to_owned(),
    ];

    // As UID 65532 alone, the socket (root and its group, 0660 as engines make it) is out of
    // reach, privileged or not: the manager exits, saying so. This is why the Deployment must
    // give it the socket's group (supplementalGroups) or run it as root (runAsUser: 0).
    if mode & 0o006 == 0 {
        let denied = ctx.name("denied");
        run_detached(&denied, &[], &mounts, &args);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = docker_ok(&["inspect", "-f", "{{.State.Running}}", &denied]);
            if state.trim() == "false" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the manager kept running without access to the Docker socket:\n{}",
                logs(&denied)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = logs(&denied);
        assert!(log.contains("reaching the Docker engine"), "{log}");
    }

    // With the socket's group added (as supplementalGroups does), it serves and gets ready.
    let group = if mode & 0o060 == 0o060 {
        format!("--group-add={gid}")
    } else {
        "--user=0:0".to_owned() // A socket only its owner may use.
    };
    let name = ctx.name("manager");
    run_detached(&name, &[&group], &mounts, &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http_get(health, "/readyz").await;
        if answer
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.0 200"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the manager in the image did not get ready within 60s; last answer {answer:?}; log:\n{}",
            logs(&name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if group.starts_with("--group-add") {
        let top = docker_ok(&["top", &name, "-o", "pid,uid,comm"]);
        assert!(
            top.lines()
                .any(|l| l.split_whitespace().skip(1).eq(["65532", "manager"])),
            "the manager runs as UID 65532:\n{top}"
        );
    }
}
