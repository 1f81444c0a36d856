//! Core Cluster API's part for tests of the DockerMachine controller: a Cluster as CAPI reports
//! it, Machines with their DockerMachines and bootstrap data Secrets, and waits on conditions.

use std::collections::BTreeMap;
use std::time::Duration;

use capd::api::capi::{
    Bootstrap, Cluster, ClusterSpec, ContractVersionedObjectReference, Machine, MachineSpec,
};
use capd::api::{DockerMachine, DockerMachineSpec};
use capd::docker::ContainerRuntime;
use capd::docker::engine::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::docker::NODE_IMAGE;
use super::{TestContext, wait_for};

/// How long a machine may take to reach a condition.
pub const TIMEOUT: Duration = Duration::from_secs(90);
/// A cloud-config command that writes the bootstrap success sentinel, as CABPK's last one does.
pub const SENTINEL: &str =
    "mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete";

/// A Cluster whose infrastructure is provisioned, optionally with a control-plane reference and
/// an initialized control plane, as core CAPI reports them.
pub async fn cluster(
    ctx: &TestContext,
    name: &str,
    control_plane_ref: bool,
    initialized: bool,
) -> Cluster {
    let mut spec = ClusterSpec::default();
    if control_plane_ref {
        spec.control_plane_ref = ContractVersionedObjectReference {
            kind: "KubeadmControlPlane".into(),
            name: name.into(),
            api_group: "controlplane.cluster.x-k8s.io".into(),
        };
    }
    let cluster = ctx
        .api::<Cluster>()
        .create(&PostParams::default(), &Cluster::new(name, spec))
        .await
        .expect("Cluster");
    let status = json!({"status": {
        "initialization": {"infrastructureProvisioned": true},
        "conditions": [{"type": "ControlPlaneInitialized", "status": if initialized { "True" } else { "False" },
                        "reason": "Test", "message": "", "lastTransitionTime": "2026-11-01T00:00:00Z"}]
    }});
    ctx.api::<Cluster>()
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("Cluster status");
    cluster
}

/// A Machine of `cluster` with its DockerMachine (owned by it, as core CAPI sets it) and, when
/// `cloud_config` is given, its bootstrap data Secret.
pub async fn machine(
    ctx: &TestContext,
    cluster: &str,
    name: &str,
    control_plane: bool,
    cloud_config: Option<&str>,
    bootstrap_timeout: Option<&str>,
) -> DockerMachine {
    let spec = DockerMachineSpec {
        custom_image: NODE_IMAGE.into(),
        bootstrap_timeout: bootstrap_timeout.map(str::to_owned),
        ..Default::default()
    };
    machine_with_spec(ctx, cluster, name, control_plane, cloud_config, spec).await
}

/// As [`machine`], with the DockerMachine's spec given.
pub async fn machine_with_spec(
    ctx: &TestContext,
    cluster: &str,
    name: &str,
    control_plane: bool,
    cloud_config: Option<&str>,
    spec: DockerMachineSpec,
) -> DockerMachine {
    let secret_name = format!("{name}-bootstrap");
    if let Some(data) = cloud_config {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(secret_name.clone()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("value".to_owned(), ByteString(data.as_bytes().to_vec())),
                ("format".to_owned(), ByteString(b"cloud-config".to_vec())),
            ])),
            ..Default::default()
        };
        // A test may have created the Secret with bad data already; that one is kept.
        match ctx
            .api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("Secret: {e}"),
        }
    }
    let mut labels = BTreeMap::from([(
        "cluster.x-k8s.io/cluster-name".to_owned(),
        cluster.to_owned(),
    )]);
    if control_plane {
        labels.insert("cluster.x-k8s.io/control-plane".into(), String::new());
    }
    let mut m = Machine::new(
        name,
        MachineSpec {
            cluster_name: cluster.into(),
            bootstrap: Bootstrap {
                data_secret_name: cloud_config.map(|_| secret_name),
            },
            infrastructure_ref: ContractVersionedObjectReference {
                kind: "DockerMachine".into(),
                name: name.into(),
                api_group: "infrastructure.cluster.x-k8s.io".into(),
            },
            version: "v1.35.5".into(),
            failure_domain: String::new(),
        },
    );
    m.metadata.labels = Some(labels.clone());
    let m = ctx
        .api::<Machine>()
        .create(&PostParams::default(), &m)
        .await
        .expect("Machine");
    let mut dm = DockerMachine::new(name, spec);
    dm.metadata.labels = Some(labels);
    dm.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "cluster.x-k8s.io/v1beta2".into(),
        kind: "Machine".into(),
        name: name.into(),
        uid: m.uid().unwrap(),
        ..Default::default()
    }]);
    ctx.api::<DockerMachine>()
        .create(&PostParams::default(), &dm)
        .await
        .expect("DockerMachine")
}

/// The workload cluster's kubeconfig Secret of `cluster`, as core CAPI writes it (key `value`,
/// the cluster-name label).
pub async fn kubeconfig_secret(ctx: &TestContext, cluster: &str, kubeconfig: Vec<u8>) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{cluster}-kubeconfig")),
            labels: Some(BTreeMap::from([(
                "cluster.x-k8s.io/cluster-name".to_owned(),
                cluster.to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "value".to_owned(),
            ByteString(kubeconfig),
        )])),
        ..Default::default()
    };
    ctx.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("the kubeconfig Secret");
}

/// A Cluster without a control-plane reference, and the name for a worker machine of it.
pub async fn worker_of_new_cluster(ctx: &TestContext) -> (String, String) {
    let cluster_name = ctx.name("c");
    cluster(ctx, &cluster_name, false, false).await;
    let name = format!("{cluster_name}-w");
    (cluster_name, name)
}

/// Condition `type_` of `dm`, if set.
pub fn condition<'a>(dm: &'a DockerMachine, type_: &str) -> Option<&'a Condition> {
    dm.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits until condition `type_` of DockerMachine `name` satisfies `check`.
pub async fn wait_condition(
    ctx: &TestContext,
    name: &str,
    type_: &str,
    check: impl Fn(&Condition) -> bool,
) -> DockerMachine {
    let last = std::sync::Mutex::new(None);
    let waited = tokio::time::timeout(
        TIMEOUT,
        wait_for(&format!("{type_} on {name}"), TIMEOUT * 2, || async {
            let dm = ctx.api::<DockerMachine>().get(name).await.ok()?;
            let done = condition(&dm, type_).is_some_and(&check);
            *last.lock().unwrap() = dm.status.clone();
            done.then_some(dm)
        }),
    )
    .await;
    match waited {
        Ok(dm) => dm,
        Err(_) => panic!(
            "timed out after {TIMEOUT:?} waiting for {type_} on {name}; its status: {:#?}",
            last.lock().unwrap()
        ),
    }
}

/// Container `name` as the engine reports it, or `None` when there is none.
pub async fn container(name: &str) -> Option<capd::docker::Container> {
    let engine = Engine::connect().await.unwrap();
    engine.inspect_container(name).await.unwrap()
}

/// What `script` prints on standard output when run by `sh` in container `name`.
pub async fn node_sh(name: &str, script: &str) -> String {
    let engine = Engine::connect().await.unwrap();
    let out = engine
        .exec(name, &["/bin/sh".into(), "-c".into(), script.into()], None)
        .await
        .unwrap();
    out.stdout
}
