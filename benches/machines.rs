//! Machine provisioning: N DockerMachines (test node image, a short cloud-config) driven by the
//! DockerMachine controller against a real apiserver and Docker engine, timed from each
//! DockerMachine's creation to `status.initialization.provisioned` and to `Ready` (bootstrap
//! done); next to it, the floor: the same container create/start, boot wait and bootstrap
//! exec done directly against the engine, as fast as a script could, for N nodes at once.
//!
//!   cargo bench --bench machines [-- --machines 1,20,100]
//!
//! The controllers, the apiserver, the engine and the benchmark share the machine.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use capd::api::DockerMachine;
use capd::api::ip_family::IpFamily;
use capd::bootstrap::{self, Format, Options};
use capd::docker::engine::Engine;
use capd::docker::labels::Owner;
use capd::docker::node::{self, Node, Role};
use capd::docker::{ContainerRuntime, kind_images, node_bootstrap};
use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::runtime::{WatchStreamExt, watcher};

use support::capi::{SENTINEL, cluster, machine};
use support::controller::RunningControllers;
use support::docker::NODE_IMAGE;
use support::{TestContext, crds};

/// How long one round may take before the benchmark gives up.
const DEADLINE: Duration = Duration::from_secs(900);

/// `cargo bench` runs 1, 20 and 100 machines; `cargo test --all-targets` runs the debug build
/// with 1 and 3, to check that the benchmark still works.
fn sizes() -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pair) = args.windows(2).find(|p| p[0] == "--machines") {
        return pair[1]
            .split(',')
            .map(|n| n.parse().expect("--machines N,M,..."))
            .collect();
    }
    if cfg!(debug_assertions) {
        vec![1, 3]
    } else {
        vec![1, 20, 100]
    }
}

fn cloud_config() -> String {
    format!(
        "#cloud-config\nwrite_files:\n- path: /etc/capd-bench/hello\n  content: hello\nruncmd:\n- echo ran >> /var/lib/capd-rs-test/runs\n- {SENTINEL}\n"
    )
}

/// Milliseconds at the median and at the maximum.
fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:>7.0} ms  max {:>7.0} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    )
}

/// What one round through the controller measured.
struct ControllerRound {
    provisioned: Vec<Duration>,
    ready: Vec<Duration>,
    /// Reconciles per machine, on average, until all were ready.
    reconciles: f64,
    deleted: Duration,
}

/// Times through the controller: provisioned and ready per machine, reconciles, and the
/// deletion of all.
async fn through_controller(n: usize) -> ControllerRound {
    let ctx = TestContext::new(&format!("bench-dm-{n}")).await;
    crds::install(&ctx.kube).await;
    let engine = Engine::connect().await.expect("Docker");
    let mut settings = RunningControllers::settings(&ctx.namespace, "kind");
    settings.docker_machine_concurrency = 100; // the manager's default
    let controllers =
        RunningControllers::with_settings(&ctx, std::sync::Arc::new(engine), settings);
    let cluster_name = ctx.name("c");
    cluster(&ctx, &cluster_name, false, false).await;

    // Milestones are taken as the watch reports them, while machines are still being created.
    let mut events = watcher(ctx.api::<DockerMachine>(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let milestones = tokio::spawn(async move {
        let (mut provisioned, mut ready) = (HashMap::new(), HashMap::new());
        let deadline = Instant::now() + DEADLINE;
        while ready.len() < n {
            let dm: DockerMachine = tokio::time::timeout_at(deadline.into(), events.try_next())
                .await
                .expect("machines to become ready in time")
                .expect("watching DockerMachines")
                .expect("the watch ended");
            let name = dm.name_any();
            let status = dm.status.clone().unwrap_or_default();
            if status.initialization.provisioned == Some(true) {
                provisioned.entry(name.clone()).or_insert_with(Instant::now);
            }
            let is_ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if is_ready {
                ready.entry(name).or_insert_with(Instant::now);
            }
        }
        (provisioned, ready)
    });
    let created: HashMap<String, Instant> = futures::stream::iter(0..n)
        .map(|i| {
            let (ctx, cluster_name) = (&ctx, &cluster_name);
            async move {
                let name = format!("{cluster_name}-w{i}");
                let config = cloud_config();
                machine(ctx, cluster_name, &name, false, Some(&config), None).await;
                (name, Instant::now())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let (provisioned, ready) = milestones.await.expect("the watch task");
    let since = |at: &HashMap<String, Instant>| -> Vec<Duration> {
        at.iter().map(|(name, t)| *t - created[name]).collect()
    };
    let (provisioned, ready) = (since(&provisioned), since(&ready));
    let reconciles = created
        .keys()
        .map(|name| controllers.reconciles("DockerMachine", &ctx.namespace, name))
        .sum::<u64>() as f64
        / n as f64;

    let deleting = Instant::now();
    let deadline = deleting + DEADLINE;
    let api = ctx.api::<DockerMachine>();
    for name in created.keys() {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("deleting a DockerMachine");
    }
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    loop {
        if api
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty()
        {
            break;
        }
        tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .expect("machines to be deleted in time");
    }
    ControllerRound {
        provisioned,
        ready,
        reconciles,
        deleted: deleting.elapsed(),
    }
}

/// The floor: per node, create and start the container, wait for its boot line, run
/// `crictl ps` (provisioned), then install the runner and run it attached (bootstrapped).
async fn direct(n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let ctx = TestContext::new(&format!("bench-floor-{n}")).await;
    let plan = bootstrap::plan(
        Format::CloudConfig,
        cloud_config().as_bytes(),
        &Options {
            kubelet_cgroup_args: true,
        },
    )
    .expect("bootstrap plan");
    let image = kind_images::mapping("v1.35.5", NODE_IMAGE).unwrap();
    let options = RunningControllers::settings(&ctx.namespace, "kind").node_options;
    let times: Vec<(Duration, Duration)> = futures::stream::iter(0..n)
        .map(|i| {
            let (ctx, plan, image, options) = (&ctx, &plan, &image, &options);
            async move {
                let engine = Engine::connect().await.expect("Docker");
                let name = ctx.name(&format!("n{i}"));
                let owner = Owner {
                    kind: "DockerMachine".into(),
                    namespace: ctx.namespace.clone(),
                    name: name.clone(),
                };
                let spec = node::container_spec(
                    &Node {
                        cluster: &ctx.prefix,
                        name: &name,
                        owner: &owner,
                        role: Role::Worker,
                        failure_domain: "",
                        image,
                        extra_mounts: &[],
                        network: "kind",
                        ip_family: IpFamily::V4,
                    },
                    options,
                )
                .unwrap();
                let start = Instant::now();
                engine.run_container(&spec).await.expect("run the node");
                let deadline = Instant::now() + DEADLINE;
                while !engine
                    .logs(&name)
                    .await
                    .unwrap_or_default()
                    .contains("Reached target Multi-User System")
                {
                    assert!(Instant::now() < deadline, "{name} did not boot");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let crictl = ["crictl".to_owned(), "ps".to_owned()];
                engine.exec(&name, &crictl, None).await.expect("crictl ps");
                let provisioned = start.elapsed();
                node_bootstrap::install(&engine, &name, plan)
                    .await
                    .expect("install the runner");
                let run = capd::bootstrap::runner::start_command();
                let out = engine.exec(&name, &run, None).await.expect("run");
                assert_eq!(out.exit_code, 0, "{}", out.stderr);
                (provisioned, start.elapsed())
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    times.into_iter().unzip()
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    println!(
        "machines benchmark: test node image, a 3-step cloud-config, controller concurrency 100"
    );
    for n in sizes() {
        let round = through_controller(n).await;
        let (floor_provisioned, floor_ready) = direct(n).await;
        println!("N = {n}");
        println!("  capd-rs  provisioned  {}", summary(round.provisioned));
        println!("  floor    provisioned  {}", summary(floor_provisioned));
        println!("  capd-rs  bootstrapped {}", summary(round.ready));
        println!("  floor    bootstrapped {}", summary(floor_ready));
        println!(
            "  capd-rs  delete all   {:>7.0} ms   ({:.1} reconciles per machine to ready)",
            round.deleted.as_secs_f64() * 1000.0,
            round.reconciles
        );
    }
}
