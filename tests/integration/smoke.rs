//! Smoke tests of the harness itself: the apiserver stores objects, the test node image runs
//! commands like a kind node, and the HAProxy image serves its stats page.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};

use crate::support::docker::{HAPROXY_IMAGE, NODE_IMAGE};
use crate::support::{TestContext, http_get, wait_for};

const NETWORK: &str = "kind";

#[tokio::test]
async fn apiserver_stores_a_configmap() {
    let ctx = TestContext::new("configmap").await;
    let api = ctx.api::<ConfigMap>();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("greeting".into()),
            ..Default::default()
        },
        data: Some([("hello".to_owned(), "world".to_owned())].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create ConfigMap");
    let read = api.get("greeting").await.expect("get ConfigMap");
    assert_eq!(
        read.metadata.namespace.as_deref(),
        Some(ctx.namespace.as_str())
    );
    assert_eq!(read.data.unwrap()["hello"], "world");
}

#[tokio::test]
async fn node_image_boots_and_runs_commands() {
    let ctx = TestContext::new("node").await;
    let name = ctx.name("node");
    run_container(&ctx.docker, &name, NODE_IMAGE, None).await;

    wait_for(
        "the node's Multi-User System line",
        Duration::from_secs(30),
        || async {
            logs(&ctx.docker, &name)
                .await
                .contains("Reached target Multi-User System.")
                .then_some(())
        },
    )
    .await;

    let (code, out) = exec(
        &ctx.docker,
        &name,
        &[
            "sh",
            "-c",
            "hostname; crictl ps >/dev/null && echo crictl-ok",
        ],
    )
    .await;
    assert_eq!(code, 0, "exec output: {out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [name.as_str(), "crictl-ok"]
    );

    let (code, out) = exec(&ctx.docker, &name, &["sh", "-c", "echo oops >&2; exit 3"]).await;
    assert_eq!((code, out.trim()), (3, "oops"));

    let ip = container_ip(&ctx.docker, &name).await;
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "not an IPv4 address: {ip:?}"
    );

    ctx.docker
        .remove_container(
            &name,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
        .expect("remove container");
    let gone = ctx
        .docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await;
    assert!(
        matches!(
            gone,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })
        ),
        "container still there: {gone:?}"
    );
}

#[tokio::test]
async fn haproxy_image_serves_stats() {
    let ctx = TestContext::new("haproxy").await;
    let name = ctx.name("lb");
    run_container(&ctx.docker, &name, HAPROXY_IMAGE, Some("8404/tcp")).await;
    let port = host_port(&ctx.docker, &name, "8404/tcp").await;

    let page = wait_for("HAProxy's stats page", Duration::from_secs(30), || async {
        http_get(port, "/stats")
            .await
            .filter(|page| page.split_whitespace().nth(1) == Some("200"))
    })
    .await;
    assert!(
        page.contains("Statistics Report"),
        "unexpected stats page: {page:.200}"
    );
}

/// Creates and starts a container on the `kind` network, publishing `port` on a random host port.
async fn run_container(docker: &Docker, name: &str, image: &str, port: Option<&str>) {
    let host_config = HostConfig {
        port_bindings: port.map(|p| {
            HashMap::from([(
                p.to_owned(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some("0".into()),
                }]),
            )])
        }),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(image.into()),
        hostname: Some(name.into()),
        exposed_ports: port.map(|p| vec![p.to_owned()]),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                NETWORK.to_owned(),
                EndpointSettings::default(),
            )])),
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    docker
        .start_container(name, None)
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
}

async fn logs(docker: &Docker, name: &str) -> String {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let chunks: Vec<_> = docker.logs(name, Some(opts)).collect().await;
    chunks
        .into_iter()
        .flatten()
        .map(|c| c.to_string())
        .collect()
}

/// Runs a command in the container; returns its exit code and combined output.
async fn exec(docker: &Docker, name: &str, cmd: &[&str]) -> (i64, String) {
    let exec = docker
        .create_exec(
            name,
            CreateExecOptions {
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("create exec");
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await.expect("start exec")
    {
        while let Some(chunk) = output.next().await {
            out.push_str(&chunk.expect("exec output").to_string());
        }
    }
    let code = docker
        .inspect_exec(&exec.id)
        .await
        .expect("inspect exec")
        .exit_code;
    (code.expect("exec finished"), out)
}

async fn network_settings(docker: &Docker, name: &str) -> Option<bollard::models::NetworkSettings> {
    docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .expect("inspect")
        .network_settings
}

async fn container_ip(docker: &Docker, name: &str) -> String {
    network_settings(docker, name)
        .await
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(NETWORK))
        .and_then(|e| e.ip_address)
        .unwrap_or_default()
}

async fn host_port(docker: &Docker, name: &str, port: &str) -> u16 {
    network_settings(docker, name)
        .await
        .and_then(|n| n.ports)
        .and_then(|mut p| p.remove(port))
        .flatten()
        .and_then(|b| b.into_iter().next())
        .and_then(|b| b.host_port)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no host port for {port} on {name}"))
}

#[tokio::test]
async fn a_node_spec_runs_on_the_engine_as_kind_runs_nodes() {
    use capd::docker::ContainerRuntime;
    use capd::docker::labels::Owner;
    use capd::docker::node::{Node, NodeOptions, Role, container_spec};

    let ctx = TestContext::new("node-spec").await;
    let engine = capd::docker::engine::Engine::connect()
        .await
        .expect("Docker");
    let name = ctx.name("cp");
    let image = capd::docker::kind_images::mapping("v1.35.5", NODE_IMAGE).unwrap();
    let owner = Owner {
        kind: "DockerMachine".into(),
        namespace: ctx.namespace.clone(),
        name: "m".into(),
    };
    let mounts = [capd::api::Mount {
        container_path: "/host-tmp".into(),
        host_path: std::env::temp_dir().display().to_string(),
        read_only: true,
    }];
    let node = Node {
        cluster: &ctx.prefix,
        name: &name,
        owner: &owner,
        role: Role::ControlPlane,
        failure_domain: "fd1",
        image: &image,
        extra_mounts: &mounts,
        network: NETWORK,
        // Dual stack: the engine must accept the IPv6 sysctls.
        ip_family: capd::api::ip_family::IpFamily::Dual,
    };
    // These machines refuse privileged containers and have no /lib/modules (see TESTING.md).
    let relaxed = NodeOptions {
        privileged: false,
        lib_modules: false,
        proxy_env: vec!["NO_PROXY=localhost".into()],
    };
    engine
        .run_container(&container_spec(&node, &relaxed).unwrap())
        .await
        .expect("run the node container");

    let container = engine
        .inspect_container(&name)
        .await
        .unwrap()
        .expect("the node container");
    assert!(container.running);
    assert_eq!(container.labels["io.x-k8s.kind.role"], "control-plane");
    assert!(
        container.host_ports.contains_key("6443/tcp"),
        "{:?}",
        container.host_ports
    );
    let script = "hostname; grep -E ' /(tmp|run) ' /proc/mounts | cut -d' ' -f2,3 | sort; echo $KUBECONFIG $NO_PROXY; test -d /host-tmp && echo mounted; cat /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/all/forwarding";
    let (code, out) = exec(&ctx.docker, &name, &["sh", "-c", script]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            name.as_str(),
            "/run tmpfs",
            "/tmp tmpfs",
            "/etc/kubernetes/admin.conf localhost",
            "mounted",
            "0",
            "1"
        ]
    );
    let inspect = |format: &str| {
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", format, &name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        inspect(
            "{{.HostConfig.CgroupnsMode}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.Privileged}}"
        ),
        "private on-failure false"
    );
    assert_eq!(
        inspect("{{range .HostConfig.PortBindings}}{{range .}}{{.HostIp}}{{end}}{{end}}"),
        "127.0.0.1"
    );
    let volume = inspect("{{range .Mounts}}{{if eq .Destination \"/var\"}}{{.Name}}{{end}}{{end}}");
    assert!(!volume.is_empty(), "no anonymous /var volume");

    engine.remove_container(&name).await.unwrap();
    let gone = std::process::Command::new("docker")
        .args(["volume", "inspect", &volume])
        .output()
        .unwrap();
    assert!(
        !gone.status.success(),
        "the /var volume outlived its container"
    );
}
