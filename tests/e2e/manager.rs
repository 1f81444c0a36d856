//! The manager binary serves the admission webhooks over TLS, turns a DockerCluster into a
//! load-balancer container and removes it again, and stops cleanly on SIGTERM.

use std::process::Command;
use std::time::Duration;

use crate::support::manager::ManagerProcess;
use crate::support::webhook::{Pki, Registration, wait_until_active};
use crate::support::{TestContext, crds, kubectl_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_serves_webhooks_reconciles_clusters_and_stops_on_sigterm() {
    let ctx = TestContext::new("e2e-manager").await;
    crds::install(&ctx.kube).await;
    let pki = Pki::mint("e2e-ca");
    let mut manager = ManagerProcess::start(&pki, &["--namespace", &ctx.namespace], &[]);
    let _registration = Registration::register(&ctx, manager.webhook_port, &pki.ca_pem);
    wait_until_active(&ctx.namespace).await;

    let apply_args = ["apply", "-n", &ctx.namespace, "-f", "-"];
    let (ok, _, err) = kubectl_async(
        &apply_args,
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerMachine\nmetadata:\n  name: m\nspec:\n  bootstrapTimeout: forever\n",
    )
    .await;
    assert!(
        !ok && err.contains("spec.bootstrapTimeout: Invalid value"),
        "{err}"
    );
    let (ok, _, err) = kubectl_async(
        &apply_args,
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerCluster\nmetadata:\n  name: c\nspec:\n  failureDomains: [{name: a}]\n",
    )
    .await;
    assert!(ok, "{err}");
    let (_, out, _) = kubectl_async(
        &[
            "get",
            "dockercluster",
            "c",
            "-n",
            &ctx.namespace,
            "-o",
            "jsonpath={.spec.controlPlaneEndpoint.port} {.spec.failureDomains[0].controlPlane}",
        ],
        "",
    )
    .await;
    assert_eq!(out, "6443 false");

    // A Cluster and the DockerCluster it owns, as core Cluster API would create them.
    let name = ctx.name("c");
    let cluster = format!(
        "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  infrastructureRef:\n    apiGroup: infrastructure.cluster.x-k8s.io\n    kind: DockerCluster\n    name: {name}\n"
    );
    let (ok, _, err) = kubectl_async(&apply_args, &cluster).await;
    assert!(ok, "{err}");
    let (_, uid, _) = kubectl_async(
        &[
            "get",
            "cluster",
            &name,
            "-n",
            &ctx.namespace,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        "",
    )
    .await;
    let docker_cluster = format!(
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerCluster\nmetadata:\n  name: {name}\n  ownerReferences:\n  - {{apiVersion: cluster.x-k8s.io/v1beta2, kind: Cluster, name: {name}, uid: {uid}}}\nspec:\n  loadBalancer: {{imageRepository: capd-rs-test, imageTag: local}}\n"
    );
    let (ok, _, err) = kubectl_async(&apply_args, &docker_cluster).await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl_async(
        &[
            "wait",
            "dockercluster",
            &name,
            "-n",
            &ctx.namespace,
            "--for=jsonpath={.status.initialization.provisioned}=true",
            "--timeout=60s",
        ],
        "",
    )
    .await;
    assert!(ok, "the DockerCluster was not provisioned: {err}");
    let (_, host, _) = kubectl_async(
        &[
            "get",
            "dockercluster",
            &name,
            "-n",
            &ctx.namespace,
            "-o",
            "jsonpath={.spec.controlPlaneEndpoint.host}",
        ],
        "",
    )
    .await;
    let lb_ip = docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.kind.IPAddress}}",
        &format!("{name}-lb"),
    ]);
    assert_eq!(host, lb_ip.trim(), "the endpoint is the LB container's IP");

    let (ok, _, err) = kubectl_async(
        &[
            "delete",
            "dockercluster",
            &name,
            "-n",
            &ctx.namespace,
            "--timeout=60s",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &format!("name=^/{name}-lb$")]),
        "",
        "the LB container outlived its DockerCluster"
    );

    manager.signal(libc::SIGTERM);
    let status = manager.wait_exit(Duration::from_secs(15)).await;
    let log = manager.log();
    assert!(
        status.is_some_and(|s| s.success()),
        "manager did not exit cleanly on SIGTERM ({status:?}):\n{log}"
    );
    assert!(
        log.contains("serving the admission webhooks") && log.contains("shutting down"),
        "{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a log that is not a terminal got escape sequences:\n{log}"
    );
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
