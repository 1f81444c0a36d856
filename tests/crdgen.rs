//! The committed CRDs match the Rust types, and `crdgen --check` catches drift.

use std::path::Path;
use std::process::{Command, Output};

const BASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/crd/bases");

fn crdgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .args(args)
        .output()
        .expect("running crdgen")
}

fn copy_bases(to: &Path) {
    for entry in std::fs::read_dir(BASES).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn committed_crds_match_the_types() {
    let out = crdgen(&["--check"]);
    assert!(
        out.status.success(),
        "config/crd/bases drifted from the Rust types; run `cargo run --bin crdgen` and commit:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_names_a_changed_or_missing_file_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    copy_bases(dir.path());
    let changed = dir
        .path()
        .join("infrastructure.cluster.x-k8s.io_dockermachines.yaml");
    let missing = dir
        .path()
        .join("infrastructure.cluster.x-k8s.io_dockerclusters.yaml");
    let edited = std::fs::read_to_string(&changed)
        .unwrap()
        .replace("maxLength: 512", "maxLength: 513");
    std::fs::write(&changed, &edited).unwrap();
    std::fs::remove_file(&missing).unwrap();

    let out = crdgen(&["--check", "--dir", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&changed.display().to_string()), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(
        !stderr.contains("dockermachinetemplates.yaml"),
        "an unchanged file was reported: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&changed).unwrap(),
        edited,
        "--check wrote a file"
    );
    assert!(!missing.exists(), "--check wrote a file");
}

#[test]
fn output_is_deterministic() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&a, &b] {
        assert!(
            crdgen(&["--dir", dir.path().to_str().unwrap()])
                .status
                .success()
        );
    }
    let mut names: Vec<_> = std::fs::read_dir(a.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4);
    for name in names {
        let first = std::fs::read(a.path().join(&name)).unwrap();
        assert_eq!(
            first,
            std::fs::read(b.path().join(&name)).unwrap(),
            "{name:?} differs between runs"
        );
        assert_eq!(
            first,
            std::fs::read(Path::new(BASES).join(&name)).unwrap(),
            "{name:?} differs from the committed file"
        );
    }
}
