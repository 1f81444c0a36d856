//! Bootstrap data run in a real node container (the test node image) through the in-node
//! runner: files and commands land as written, each command runs once even when the runner is
//! started again, and a failing command is reported with its exit code and output.

use std::io::Write as _;
use std::time::Duration;

use base64::Engine as _;
use capd::bootstrap::runner::Progress;
use capd::bootstrap::{Format, Options, Plan, plan};
use capd::docker::ContainerRuntime;
use capd::docker::engine::Engine;
use capd::docker::labels::Owner;
use capd::docker::node::{Node, NodeOptions, Role, container_spec};
use capd::docker::{kind_images, node_bootstrap};

use crate::support::docker::NODE_IMAGE;
use crate::support::{TestContext, wait_for};

/// Starts a worker node container from the test image and waits until it has booted.
async fn booted_node(ctx: &TestContext, engine: &Engine) -> String {
    let name = ctx.name("node");
    let image = kind_images::mapping("v1.35.5", NODE_IMAGE).unwrap();
    let owner = Owner {
        kind: "DockerMachine".into(),
        namespace: ctx.namespace.clone(),
        name: "m".into(),
    };
    let node = Node {
        cluster: &ctx.prefix,
        name: &name,
        owner: &owner,
        role: Role::Worker,
        failure_domain: "",
        image: &image,
        extra_mounts: &[],
        network: "kind",
        ip_family: capd::api::ip_family::IpFamily::V4,
    };
    let relaxed = NodeOptions {
        privileged: false,
        lib_modules: false,
        proxy_env: Vec::new(),
    };
    engine
        .run_container(&container_spec(&node, &relaxed).unwrap())
        .await
        .expect("node container");
    wait_for("the node to boot", Duration::from_secs(30), || async {
        engine
            .logs(&name)
            .await
            .ok()
            .filter(|l| l.contains("Reached target Multi-User System"))
            .map(drop)
    })
    .await;
    name
}

/// Translates `cloud_config`, installs the runner for it in node `name` and starts it.
async fn install_and_start(engine: &Engine, name: &str, cloud_config: &str) -> Plan {
    let plan = plan(
        Format::CloudConfig,
        cloud_config.as_bytes(),
        &Options::default(),
    )
    .unwrap();
    node_bootstrap::install(engine, name, &plan).await.unwrap();
    node_bootstrap::start(engine, name).await.unwrap();
    plan
}

async fn finished(engine: &Engine, name: &str) -> Progress {
    wait_for(
        "the bootstrap to finish",
        Duration::from_secs(60),
        || async {
            let p = node_bootstrap::progress(engine, name).await.ok()?;
            (!p.running && (p.succeeded || p.failed.is_some())).then_some(p)
        },
    )
    .await
}

async fn sh(engine: &Engine, name: &str, script: &str) -> String {
    let out = engine
        .exec(name, &["/bin/sh".into(), "-c".into(), script.into()], None)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{script}: {}", out.stderr);
    out.stdout
}

#[tokio::test]
async fn cloud_config_runs_once_in_the_node() {
    let ctx = TestContext::new("boot-ok").await;
    let engine = Engine::connect().await.unwrap();
    let name = booted_node(&ctx, &engine).await;

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"zipped").unwrap();
    let gz_b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let cloud_config = format!(
        r#"## template: jinja
#cloud-config
write_files:
- path: /etc/capd-test/hello.txt
  content: hello
  permissions: "0600"
- path: /etc/capd-test/data.bin
  encoding: gz+b64
  content: {gz_b64}
- path: /etc/capd-test/hello.txt
  content: " again"
  append: true
users:
- name: someone
runcmd:
- echo ran >> /var/lib/capd-rs-test/runs
- [sh, -c, "sleep 1; echo slow >> /var/lib/capd-rs-test/runs"]
- mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete
"#
    );
    let plan = plan(
        Format::CloudConfig,
        cloud_config.as_bytes(),
        &Options::default(),
    )
    .unwrap();
    assert!(
        plan.warnings.iter().any(|w| w.contains("users")),
        "{:?}",
        plan.warnings
    );
    node_bootstrap::install(&engine, &name, &plan)
        .await
        .unwrap();
    // Starts that race (a restarted manager, a reconcile woken twice) run one runner: nothing
    // may run twice.
    let starts = (0..4).map(|_| node_bootstrap::start(&engine, &name));
    for started in futures::future::join_all(starts).await {
        started.unwrap();
    }
    node_bootstrap::start(&engine, &name).await.unwrap();
    let progress = finished(&engine, &name).await;
    assert!(
        progress.succeeded && progress.failed.is_none(),
        "{progress:?}"
    );
    assert_eq!(progress.done, plan.commands.len());
    node_bootstrap::start(&engine, &name).await.unwrap();
    let again = finished(&engine, &name).await;
    assert_eq!(again.done, plan.commands.len());

    assert_eq!(
        sh(
            &engine,
            &name,
            "cat /etc/capd-test/hello.txt; echo; stat -c %a /etc/capd-test/hello.txt"
        )
        .await,
        "hello again\n600\n"
    );
    assert_eq!(
        sh(&engine, &name, "cat /etc/capd-test/data.bin").await,
        "zipped"
    );
    assert_eq!(
        sh(&engine, &name, "cat /var/lib/capd-rs-test/runs").await,
        "ran\nslow\n",
        "each command ran once"
    );
}

#[tokio::test]
async fn a_failing_command_is_reported_and_stops_the_bootstrap() {
    let ctx = TestContext::new("boot-fail").await;
    let engine = Engine::connect().await.unwrap();
    let name = booted_node(&ctx, &engine).await;
    let cloud_config =
        "#cloud-config\nruncmd:\n- echo before\n- echo boom >&2; exit 3\n- touch /tmp/after\n";
    install_and_start(&engine, &name, cloud_config).await;
    let progress = finished(&engine, &name).await;
    let (step, code, tail) = progress.failed.clone().expect("a failure");
    assert_eq!(
        (step, code, progress.done, progress.succeeded),
        (2, 3, 1, false)
    );
    assert!(tail.contains("boom"), "{tail}");
    assert_eq!(
        sh(
            &engine,
            &name,
            "test -e /tmp/after && echo ran || echo not-run"
        )
        .await,
        "not-run\n"
    );
}

#[tokio::test]
async fn a_restarted_node_resumes_after_the_last_finished_step() {
    let ctx = TestContext::new("boot-resume").await;
    let engine = Engine::connect().await.unwrap();
    let name = booted_node(&ctx, &engine).await;
    let cloud_config = "#cloud-config\nwrite_files:\n- path: /run/capd-test/config\n  content: kept\n\
        runcmd:\n\
        - echo one >> /var/lib/capd-rs-test/runs\n\
        - echo two-started >> /var/lib/capd-rs-test/runs; while [ ! -f /var/lib/capd-rs-test/go ]; do sleep 0.1; done\n\
        - echo three >> /var/lib/capd-rs-test/runs\n\
        - mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete\n";
    let plan = install_and_start(&engine, &name, cloud_config).await;
    wait_for("step 2 to start", Duration::from_secs(30), || async {
        let runs = sh(
            &engine,
            &name,
            "cat /var/lib/capd-rs-test/runs 2>/dev/null || true",
        )
        .await;
        runs.contains("two-started").then_some(())
    })
    .await;

    // What an engine restart does to a node: it is stopped, and started again by its restart
    // policy, with an empty /run.
    restart(&name).await;
    let progress = node_bootstrap::progress(&engine, &name).await.unwrap();
    let written = plan.commands.len() - 4; // the file's steps, before the four commands
    assert_eq!(
        (progress.installed, progress.running, progress.done),
        (true, false, written + 1),
        "{progress:?}"
    );
    assert_eq!(
        sh(
            &engine,
            &name,
            "cat /run/capd-test/config 2>/dev/null || echo gone"
        )
        .await,
        "gone\n",
        "the restart emptied /run"
    );
    sh(&engine, &name, "touch /var/lib/capd-rs-test/go").await;
    node_bootstrap::start(&engine, &name).await.unwrap();
    let progress = finished(&engine, &name).await;
    assert!(progress.succeeded, "{progress:?}");
    assert_eq!(
        sh(&engine, &name, "cat /var/lib/capd-rs-test/runs").await,
        "one\ntwo-started\ntwo-started\nthree\n",
        "finished steps are not run again; the interrupted one is"
    );
    assert_eq!(
        sh(&engine, &name, "cat /run/capd-test/config").await,
        "kept",
        "the file written to /run before the restart was written again"
    );

    // A finished bootstrap stays finished when a restart empties /run (and the sentinel).
    restart(&name).await;
    let progress = node_bootstrap::progress(&engine, &name).await.unwrap();
    assert!(progress.succeeded && !progress.running, "{progress:?}");
}

/// Restarts container `name` as the engine's restart would (stop, start) and waits until it
/// has booted again.
async fn restart(name: &str) {
    let status = tokio::process::Command::new("docker")
        .args(["restart", "--time", "1", name])
        .output()
        .await
        .expect("docker restart");
    assert!(status.status.success(), "docker restart {name}: {status:?}");
    let engine = Engine::connect().await.unwrap();
    // The log of the node's current run: the boot line is this boot's.
    wait_for(
        "the node to boot again",
        Duration::from_secs(30),
        || async {
            let logs = engine.logs(name).await.ok()?;
            logs.contains("Reached target Multi-User System")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_bootstrap_that_never_writes_the_sentinel_fails() {
    let ctx = TestContext::new("boot-nosentinel").await;
    let engine = Engine::connect().await.unwrap();
    let name = booted_node(&ctx, &engine).await;
    install_and_start(&engine, &name, "#cloud-config\nruncmd:\n- echo hi\n").await;
    let progress = finished(&engine, &name).await;
    let (step, code, tail) = progress.failed.clone().expect("a failure");
    assert_eq!(
        (step, code, progress.succeeded),
        (0, 1, false),
        "{progress:?}"
    );
    assert!(
        tail.contains("none wrote /run/cluster-api/bootstrap-success.complete"),
        "{tail}"
    );
}

#[tokio::test]
async fn success_waits_for_the_commands_after_the_sentinel() {
    let ctx = TestContext::new("boot-post").await;
    let engine = Engine::connect().await.unwrap();
    let name = booted_node(&ctx, &engine).await;
    // CABPK writes the sentinel with kubeadm, then runs postKubeadmCommands.
    let cloud_config = "#cloud-config\nruncmd:\n\
        - mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete\n\
        - while [ ! -f /var/lib/capd-rs-test/go ]; do sleep 0.1; done\n";
    install_and_start(&engine, &name, cloud_config).await;
    let waiting = wait_for(
        "the sentinel's step to finish",
        Duration::from_secs(30),
        || async {
            let p = node_bootstrap::progress(&engine, &name).await.ok()?;
            (p.done == 1).then_some(p)
        },
    )
    .await;
    assert!(
        !waiting.succeeded && waiting.running,
        "success before the last command ran: {waiting:?}"
    );
    sh(&engine, &name, "touch /var/lib/capd-rs-test/go").await;
    let progress = finished(&engine, &name).await;
    assert!(progress.succeeded, "{progress:?}");
}
