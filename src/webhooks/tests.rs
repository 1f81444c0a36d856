//! The AdmissionReview adapter and the router: well-formed answers to good and bad bodies.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::admission::{Action, Features, review};
use super::docker_cluster::DockerClusterWebhook;
use super::docker_machine::DockerMachineWebhook;
use super::{MAX_BODY_BYTES, path, router};

fn admission_review(operation: &str, kind: &str, object: Value, old: Option<Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "infrastructure.cluster.x-k8s.io", "version": "v1beta2", "kind": kind},
            "resource": {"group": "infrastructure.cluster.x-k8s.io", "version": "v1beta2", "resource": "x"},
            "name": "c1",
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    })
}

fn cluster(spec: Value) -> Value {
    json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerCluster",
           "metadata": {"name": "c1", "namespace": "default"}, "spec": spec})
}

fn respond<K: super::admission::AdmissionKind>(action: Action, body: &Value) -> Value {
    let out =
        review::<K>(action, body.to_string().as_bytes(), Features::default()).expect("a review");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(
        out["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    out["response"].clone()
}

/// Applies the response's base64 JSON patch to `object`.
fn patched(object: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(
            response["patch"]
                .as_str()
                .expect("patch is a base64 string"),
        )
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch).expect("the patch applies to the sent object");
    object
}

#[test]
fn defaulting_patches_only_the_defaulted_fields() {
    let object = cluster(json!({
        "controlPlaneEndpoint": {"host": "10.0.0.1", "futureField": "kept"},
        "failureDomains": [{"name": "a", "attributes": {"x": "y"}}, {"name": "b", "controlPlane": true}],
        "someNewField": {"nested": [1, 2]}
    }));
    let response = respond::<DockerClusterWebhook>(
        Action::Mutate,
        &admission_review("CREATE", "DockerCluster", object.clone(), None),
    );
    assert_eq!(response["allowed"], true);
    let mut expected = object.clone();
    expected["spec"]["controlPlaneEndpoint"]["port"] = json!(6443);
    expected["spec"]["failureDomains"][0]["controlPlane"] = json!(false);
    assert_eq!(patched(&object, &response), expected);
}

#[test]
fn nothing_to_default_means_no_patch() {
    let object = cluster(json!({"controlPlaneEndpoint": {"host": "h", "port": 7443}}));
    let response = respond::<DockerClusterWebhook>(
        Action::Mutate,
        &admission_review("UPDATE", "DockerCluster", object.clone(), Some(object)),
    );
    assert_eq!(response["allowed"], true);
    assert!(
        response.get("patch").is_none() && response.get("patchType").is_none(),
        "{response}"
    );
}

#[test]
fn validation_denies_with_an_invalid_status_naming_the_field() {
    let object = cluster(json!({"failureDomains": [{"name": "b"}, {"name": "a"}]}));
    let response = respond::<DockerClusterWebhook>(
        Action::Validate,
        &admission_review("CREATE", "DockerCluster", object, None),
    );
    assert_eq!(response["allowed"], false);
    let status = &response["status"];
    assert_eq!(
        (status["code"].as_i64(), status["reason"].as_str()),
        (Some(422), Some("Invalid"))
    );
    assert_eq!(
        status["message"],
        r#"DockerCluster.infrastructure.cluster.x-k8s.io "c1" is invalid: spec.failureDomains: Invalid value: ["b","a"]: failure domains must be sorted by name ("b" comes before "a")"#
    );
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.failureDomains"
    );
}

#[test]
fn update_compares_with_the_old_object() {
    let machine = |image: &str| {
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerMachine",
                                       "metadata": {"name": "c1"}, "spec": {"customImage": image}})
    };
    let body = admission_review(
        "UPDATE",
        "DockerMachine",
        machine("kindest/node:v2"),
        Some(machine("kindest/node:v1")),
    );
    let response = respond::<DockerMachineWebhook>(Action::Validate, &body);
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .ends_with("spec.customImage: Forbidden: cannot be modified")
    );
}

#[test]
fn delete_and_connect_are_allowed_untouched() {
    for op in ["DELETE", "CONNECT"] {
        let response = respond::<DockerClusterWebhook>(
            Action::Validate,
            &admission_review(op, "DockerCluster", Value::Null, None),
        );
        assert_eq!(response["allowed"], true, "{op}");
    }
}

#[test]
fn bad_bodies_get_http_errors() {
    for (body, expect) in [
        ("", "not JSON"),
        ("{", "not JSON"),
        (
            "[1,2]",
            "expected an admission.k8s.io/v1 AdmissionReview, got (none) (none)",
        ),
        (
            r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
            "has no request",
        ),
        (
            r#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}"#,
            "expected an admission.k8s.io/v1",
        ),
        (
            r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}}"#,
            "request.uid",
        ),
    ] {
        let err =
            review::<DockerClusterWebhook>(Action::Validate, body.as_bytes(), Features::default())
                .unwrap_err();
        assert!(err.0.contains(expect), "{body:?}: {err}");
    }
}

#[test]
fn bad_requests_get_denied_reviews() {
    let mut no_spec = cluster(json!({}));
    no_spec.as_object_mut().unwrap().remove("spec");
    let both = [Action::Mutate, Action::Validate];
    let cases = [
        (
            admission_review("CREATE", "DockerMachine", cluster(json!({})), None),
            "admits DockerCluster.infrastructure.cluster.x-k8s.io, not DockerMachine",
            &both[..],
        ),
        (
            admission_review("CREATE", "DockerCluster", Value::Null, None),
            "has no object",
            &both[..],
        ),
        (
            admission_review("CREATE", "DockerCluster", json!("a string"), None),
            "is not a DockerCluster",
            &both[..],
        ),
        (
            admission_review(
                "CREATE",
                "DockerCluster",
                cluster(json!({"failureDomains": "x"})),
                None,
            ),
            "spec.failureDomains: invalid type",
            &both[..],
        ),
        (
            admission_review("CREATE", "DockerCluster", no_spec, None),
            "missing field `spec`",
            &both[..],
        ),
        (
            admission_review("UPDATE", "DockerCluster", cluster(json!({})), None),
            "has no oldObject",
            &[Action::Validate][..],
        ),
        (
            admission_review(
                "UPDATE",
                "DockerCluster",
                cluster(json!({})),
                Some(json!({"spec": {"controlPlaneEndpoint": {"port": "x"}}})),
            ),
            "request.oldObject is not a valid DockerCluster: spec.controlPlaneEndpoint.port",
            &[Action::Validate][..],
        ),
    ];
    for (body, expect, actions) in cases {
        for &action in actions {
            let response = respond::<DockerClusterWebhook>(action, &body);
            assert_eq!(response["allowed"], false, "{action:?} {expect}");
            let message = response["status"]["message"].as_str().unwrap();
            assert!(message.contains(expect), "{action:?} {expect}: {message}");
            assert_eq!(response["status"]["code"], 400);
        }
    }
}

async fn call(method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = router(Features::default()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn router_serves_capd_paths_and_refuses_the_rest() {
    let body = admission_review("CREATE", "DockerCluster", cluster(json!({})), None)
        .to_string()
        .into_bytes();
    let (status, text) = call("POST", &path(Action::Mutate, "DockerCluster"), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains(r#""allowed":true"#));
    assert_eq!(
        path(Action::Validate, "DockerMachineTemplate"),
        "/validate-infrastructure-cluster-x-k8s-io-v1beta2-dockermachinetemplate"
    );

    assert_eq!(
        call(
            "POST",
            "/mutate-infrastructure-cluster-x-k8s-io-v1beta2-dockermachine",
            body.clone()
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call("POST", "/nope", body.clone()).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call("GET", &path(Action::Validate, "DockerCluster"), vec![])
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        call("POST", &path(Action::Validate, "DockerCluster"), vec![])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(
            "POST",
            &path(Action::Validate, "DockerCluster"),
            b"\xff\xfe garbage".to_vec()
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(
        call("POST", &path(Action::Validate, "DockerCluster"), huge)
            .await
            .0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}
