//! The manager process as deployed: time from start to ready, resident memory idle and with N
//! DockerMachines, and what serving metrics costs (the same N machines with `/metrics` scraped
//! every second, and without). Each round is a fresh manager (`--insecure-diagnostics`, leader
//! election on) in a fresh namespace, with the test node image and a 3-step cloud-config.
//!
//!   cargo bench --bench manager [-- --machines 100]
//!
//! The manager, the apiserver, the engine and the benchmark share the machine.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use capd::api::DockerMachine;
use kube::api::{DeleteParams, ListParams};

use support::capi::{SENTINEL, cluster, condition, machine};
use support::manager::{ManagerProcess, sample_sum};
use support::webhook::Pki;
use support::{TestContext, crds, wait_for, wait_gone};

/// How long one round may take before the benchmark gives up.
const DEADLINE: Duration = Duration::from_secs(900);

/// `cargo bench` runs 100 machines; `cargo test --all-targets` runs the debug build with 2, to
/// check that the benchmark still works.
fn machines() -> usize {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pair) = args.windows(2).find(|p| p[0] == "--machines") {
        return pair[1].parse().expect("--machines N");
    }
    if cfg!(debug_assertions) { 2 } else { 100 }
}

/// The resident set size of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The CPU time process `pid` has used (user and system).
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start at the state, field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// What one round measured.
struct Round {
    ready_after: Duration,
    idle_rss: f64,
    peak_rss: f64,
    all_bootstrapped: Duration,
    reconciles: f64,
    cpu: Duration,
    scrapes: usize,
}

async fn round(n: usize, scrape_every_second: bool) -> Round {
    let ctx = TestContext::new(&format!("bench-mgr-{n}")).await;
    crds::install(&ctx.kube).await;
    let pki = Pki::mint("bench-manager-ca");
    let started = Instant::now();
    let manager = ManagerProcess::start(
        &pki,
        &[
            "--leader-elect",
            "--insecure-diagnostics",
            "--namespace",
            &ctx.namespace,
        ],
        &[("POD_NAMESPACE", ctx.namespace.as_str())],
    );
    manager.wait_healthy("/readyz", DEADLINE).await;
    let ready_after = started.elapsed();
    let idle_rss = rss_mib(manager.pid());
    let cpu_before = cpu(manager.pid());

    let scrapes = Arc::new(AtomicUsize::new(0));
    let scraper = scrape_every_second.then(|| {
        let (port, scrapes) = (manager.diagnostics_port, scrapes.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if support::http_get(port, "/metrics").await.is_some() {
                    scrapes.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    });

    let cluster_name = ctx.name("c");
    cluster(&ctx, &cluster_name, false, false).await;
    let cloud_config = format!(
        "#cloud-config\nwrite_files:\n- path: /etc/capd-bench/hello\n  content: hello\nruncmd:\n- echo ran >> /var/lib/capd-rs-test/runs\n- {SENTINEL}\n"
    );
    let creating = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("{cluster_name}-m{i}")).collect();
    for name in &names {
        machine(&ctx, &cluster_name, name, false, Some(&cloud_config), None).await;
    }
    let api = ctx.api::<DockerMachine>();
    let peak_rss = std::sync::Mutex::new(idle_rss);
    wait_for("every machine to be bootstrapped", DEADLINE, || async {
        {
            let mut peak = peak_rss.lock().unwrap();
            *peak = peak.max(rss_mib(manager.pid()));
        }
        let list = api.list(&ListParams::default()).await.ok()?;
        let done = list
            .items
            .iter()
            .filter(|dm| condition(dm, "BootstrapCompleted").is_some_and(|c| c.status == "True"))
            .count();
        (done == n).then_some(())
    })
    .await;
    let all_bootstrapped = creating.elapsed();
    let cpu_used = cpu(manager.pid()) - cpu_before;
    let reconciles = sample_sum(
        &manager.metrics().await,
        "controller_runtime_reconcile_total",
        &[("controller", "dockermachine")],
    );
    if let Some(scraper) = scraper {
        scraper.abort();
    }

    for name in &names {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in &names {
        wait_gone(&api, name, DEADLINE).await;
    }
    Round {
        ready_after,
        idle_rss,
        peak_rss: peak_rss.into_inner().unwrap(),
        all_bootstrapped,
        reconciles,
        cpu: cpu_used,
        scrapes: scrapes.load(Ordering::SeqCst),
    }
}

#[tokio::main]
async fn main() {
    let n = machines();
    println!("manager benchmark: the manager process, {n} DockerMachines per round");
    for scrape in [false, true] {
        let r = round(n, scrape).await;
        let label = if scrape {
            "metrics scraped every 1 s"
        } else {
            "no scraping"
        };
        println!("{label}:");
        println!(
            "  start to ready {:>7.0} ms   RSS idle {:>6.1} MiB   RSS peak with {n} machines {:>6.1} MiB",
            r.ready_after.as_secs_f64() * 1000.0,
            r.idle_rss,
            r.peak_rss
        );
        println!(
            "  all bootstrapped {:>7.0} ms   {:.0} reconciles ({:.1}/s)   manager CPU {:>6.0} ms{}",
            r.all_bootstrapped.as_secs_f64() * 1000.0,
            r.reconciles,
            r.reconciles / r.all_bootstrapped.as_secs_f64(),
            r.cpu.as_secs_f64() * 1000.0,
            if scrape {
                format!("   (~{} scrapes)", r.scrapes)
            } else {
                String::new()
            }
        );
    }
}
