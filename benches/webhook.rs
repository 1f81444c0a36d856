//! Webhook throughput and latency: starts the capd-rs webhook server over TLS (a certificate
//! minted for the run), drives it with concurrent AdmissionReview requests, and prints
//! requests per second and p50/p99 latency per webhook.
//!
//!   cargo bench --bench webhook [-- --requests N --concurrency C]
//!
//! Client and server share the machine, so the figures are a floor for the server alone.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capd::features::Features;
use capd::webhooks::admission::Action;
use capd::webhooks::tls::CertFiles;
use rcgen::{CertificateParams, KeyPair, SanType};
use serde_json::{Value, json};

struct Options {
    requests: usize,
    concurrency: usize,
}

/// `cargo bench` builds an optimized binary and runs the full load; `cargo test --all-targets`
/// runs the debug build, and then a short run checks that the benchmark still works.
fn options() -> Options {
    let full = !cfg!(debug_assertions);
    let mut options = Options {
        requests: if full { 20_000 } else { 200 },
        concurrency: 32,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--requests" => options.requests = pair[1].parse().expect("--requests N"),
            "--concurrency" => options.concurrency = pair[1].parse().expect("--concurrency C"),
            _ => {}
        }
    }
    options
}

fn review(kind: &str, object: Value) -> Vec<u8> {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": {"group": "infrastructure.cluster.x-k8s.io", "version": "v1beta2", "kind": kind},
            "resource": {"group": "infrastructure.cluster.x-k8s.io", "version": "v1beta2", "resource": "x"},
            "name": "bench", "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "bench"}, "object": object
        }
    })
    .to_string()
    .into_bytes()
}

#[tokio::main]
async fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("crypto provider");
    let options = options();
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let files = CertFiles::in_dir(dir.path(), "tls.crt", "tls.key");
    let serve_options = capd::webhooks::ServeOptions {
        cert: files,
        reload_every: Duration::from_secs(10),
        tls: capd::tls::TlsOptions::default(),
        features: Features::default(),
        metrics: capd::metrics::Metrics::new().0,
    };
    tokio::spawn(capd::webhooks::serve(
        listener,
        serve_options,
        || {},
        std::future::pending(),
    ));

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let cluster = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerCluster",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"failureDomains": [{"name": "fd1"}, {"name": "fd2"}, {"name": "fd3"}],
                 "loadBalancer": {"imageRepository": "kindest", "imageTag": "v20230606-42a2262b"}}});
    let machine = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerMachine",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"customImage": "kindest/node:v1.35.0", "preLoadImages": ["busybox:1.36"],
                 "extraMounts": [{"containerPath": "/data", "hostPath": "/tmp"}], "bootstrapTimeout": "5m"}});
    let cases = [
        (
            "mutate DockerCluster",
            capd::webhooks::path(Action::Mutate, "DockerCluster"),
            review("DockerCluster", cluster.clone()),
        ),
        (
            "validate DockerCluster",
            capd::webhooks::path(Action::Validate, "DockerCluster"),
            review("DockerCluster", cluster),
        ),
        (
            "validate DockerMachine",
            capd::webhooks::path(Action::Validate, "DockerMachine"),
            review("DockerMachine", machine),
        ),
    ];
    println!(
        "webhook benchmark: {} requests per webhook, {} concurrent, HTTPS to 127.0.0.1:{port}",
        options.requests, options.concurrency
    );
    for (name, path, body) in cases {
        let url = format!("https://127.0.0.1:{port}{path}");
        check(&client, &url, &body).await;
        let body = Arc::new(body);
        run(
            &client,
            &url,
            body.clone(),
            options.requests / 10,
            options.concurrency,
        )
        .await; // warm-up
        let (elapsed, mut latencies) =
            run(&client, &url, body, options.requests, options.concurrency).await;
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "{name:<24} {:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
            latencies.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        );
    }
}

/// Checks once that the webhook answers 200 with an allowed review for `body`.
async fn check(client: &reqwest::Client, url: &str, body: &[u8]) {
    let response: Value = client
        .post(url)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["response"]["allowed"], true, "{url}: {response}");
}

async fn run(
    client: &reqwest::Client,
    url: &str,
    body: Arc<Vec<u8>>,
    requests: usize,
    concurrency: usize,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, body, next) =
                (client.clone(), url.to_owned(), body.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.as_ref().clone())
                        .send()
                        .await
                        .expect("request");
                    assert!(response.status().is_success(), "{}", response.status());
                    response.bytes().await.expect("body");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(requests);
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    (start.elapsed(), all)
}
