//! Defaulting and validation of `DockerCluster` and `DockerClusterTemplate` (CAPD v1.14's rules
//! plus the checks a careful user expects), as pure functions.

use serde_json::json;

use super::admission::{AdmissionKind, Features, RequestInfo};
use super::field::{self, FieldError};
use super::rules;
use crate::api::{DockerCluster, DockerClusterSpec, DockerClusterTemplate};
use crate::formats;

/// The port the control-plane endpoint gets when none is set.
pub const DEFAULT_CONTROL_PLANE_PORT: i32 = 6443;

/// Defaults a DockerCluster spec: the endpoint's port 6443, and `controlPlane: false` on every
/// failure domain that does not say.
pub fn default_spec(spec: &mut DockerClusterSpec) {
    if spec.control_plane_endpoint.port == 0 {
        spec.control_plane_endpoint.port = DEFAULT_CONTROL_PLANE_PORT;
    }
    for fd in &mut spec.failure_domains {
        fd.control_plane.get_or_insert(false);
    }
}

/// Every rule a DockerCluster spec at `path` breaks.
pub fn validate_spec(spec: &DockerClusterSpec, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let names: Vec<&str> = spec
        .failure_domains
        .iter()
        .map(|fd| fd.name.as_str())
        .collect();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] > pair[1]) {
        errors.push(FieldError::invalid(
            field::join(path, "failureDomains"),
            json!(names),
            format!(
                "failure domains must be sorted by name ({:?} comes before {:?})",
                pair[0], pair[1]
            ),
        ));
    }
    let host = &spec.control_plane_endpoint.host;
    if !host.is_empty()
        && let Err(detail) = formats::ip_or_dns_name(host)
    {
        errors.push(FieldError::invalid(
            field::join(path, "controlPlaneEndpoint.host"),
            host.as_str(),
            detail,
        ));
    }
    let lb = &spec.load_balancer;
    let lb_path = field::join(path, "loadBalancer");
    if !lb.image_repository.is_empty()
        && formats::image_reference(&format!("{}/haproxy", lb.image_repository)).is_err()
    {
        errors.push(FieldError::invalid(
            field::join(&lb_path, "imageRepository"),
            lb.image_repository.as_str(),
            "must be an image repository such as \"kindest\" or \"registry.example.com:5000/team\"",
        ));
    }
    if !lb.image_tag.is_empty()
        && formats::image_reference(&format!("kindest/haproxy:{}", lb.image_tag)).is_err()
    {
        errors.push(FieldError::invalid(
            field::join(&lb_path, "imageTag"),
            lb.image_tag.as_str(),
            "must be an image tag: up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        ));
    }
    if let Some(reference) = &lb.custom_haproxy_config_template_ref {
        let name_path = field::join(&lb_path, "customHAProxyConfigTemplateRef.name");
        if reference.name.is_empty() {
            errors.push(FieldError::required(
                name_path,
                "the name of a ConfigMap in the same namespace",
            ));
        } else if let Err(detail) = formats::dns1123_subdomain(&reference.name) {
            errors.push(FieldError::invalid(
                name_path,
                reference.name.as_str(),
                detail,
            ));
        }
    }
    errors
}

/// Admission of DockerClusters.
pub struct DockerClusterWebhook;

impl AdmissionKind for DockerClusterWebhook {
    type Object = DockerCluster;
    const KIND: &'static str = "DockerCluster";

    fn default(cluster: &mut DockerCluster) {
        default_spec(&mut cluster.spec);
    }

    fn validate(
        new: &DockerCluster,
        old: Option<&DockerCluster>,
        _: RequestInfo,
        _: Features,
    ) -> Vec<FieldError> {
        rules::ratchet(
            validate_spec(&new.spec, "spec"),
            old.map(|o| validate_spec(&o.spec, "spec")),
        )
    }
}

/// Admission of DockerClusterTemplates.
pub struct DockerClusterTemplateWebhook;

impl AdmissionKind for DockerClusterTemplateWebhook {
    type Object = DockerClusterTemplate;
    const KIND: &'static str = "DockerClusterTemplate";

    fn default(template: &mut DockerClusterTemplate) {
        default_spec(&mut template.spec.template.spec);
    }

    /// CAPD compares the specs after defaulting both, so an update that only spells out a
    /// default is not a change.
    fn validate(
        new: &DockerClusterTemplate,
        old: Option<&DockerClusterTemplate>,
        info: RequestInfo,
        features: Features,
    ) -> Vec<FieldError> {
        if old.is_none() && !features.cluster_topology {
            return vec![FieldError::forbidden(
                "spec",
                "can be set only if the ClusterTopology feature flag is enabled",
            )];
        }
        let defaulted = |t: &DockerClusterTemplate| {
            let mut spec = t.spec.template.spec.clone();
            default_spec(&mut spec);
            spec
        };
        let (new_spec, old_spec) = (defaulted(new), old.map(defaulted));
        rules::validate_template(
            Self::KIND,
            (&new_spec, &new.spec.template.metadata),
            old.zip(old_spec.as_ref())
                .map(|(o, spec)| (spec, &o.spec.template.metadata)),
            rules::is_topology_dry_run(info, new.metadata.annotations.as_ref()),
            validate_spec,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DockerClusterTemplateSpec;
    use crate::api::capi::TOPOLOGY_DRY_RUN_ANNOTATION;
    use crate::api::common::FailureDomain;
    use std::collections::BTreeMap;

    fn fd(name: &str, control_plane: Option<bool>) -> FailureDomain {
        FailureDomain {
            name: name.into(),
            control_plane,
            attributes: BTreeMap::new(),
        }
    }

    fn messages(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_fill_only_what_is_unset() {
        let mut spec = DockerClusterSpec {
            failure_domains: vec![fd("a", None), fd("b", Some(true))],
            ..Default::default()
        };
        default_spec(&mut spec);
        assert_eq!(spec.control_plane_endpoint.port, 6443);
        assert_eq!(spec.control_plane_endpoint.host, "");
        assert_eq!(spec.failure_domains[0].control_plane, Some(false));
        assert_eq!(spec.failure_domains[1].control_plane, Some(true));

        spec.control_plane_endpoint.port = 7443;
        default_spec(&mut spec);
        assert_eq!(spec.control_plane_endpoint.port, 7443, "a set port is kept");
    }

    #[test]
    fn failure_domains_must_be_sorted() {
        let sorted = DockerClusterSpec {
            failure_domains: vec![fd("fd1", None), fd("fd2", None), fd("fd3", None)],
            ..Default::default()
        };
        assert!(validate_spec(&sorted, "spec").is_empty());
        let unsorted = DockerClusterSpec {
            failure_domains: vec![fd("fd1", None), fd("fd3", None), fd("fd2", None)],
            ..Default::default()
        };
        assert_eq!(
            messages(&validate_spec(&unsorted, "spec")),
            [
                r#"spec.failureDomains: Invalid value: ["fd1","fd3","fd2"]: failure domains must be sorted by name ("fd3" comes before "fd2")"#
            ]
        );
    }

    #[test]
    fn endpoint_host_must_be_an_ip_or_dns_name() {
        let mut spec = DockerClusterSpec::default();
        for host in ["172.18.0.2", "fd00::1", "lb.example.com", "localhost"] {
            spec.control_plane_endpoint.host = host.into();
            assert!(validate_spec(&spec, "spec").is_empty(), "{host} refused");
        }
        for host in ["lb_1.example.com", "https://lb", "lb:6443", "a b"] {
            spec.control_plane_endpoint.host = host.into();
            let errors = messages(&validate_spec(&spec, "spec"));
            assert_eq!(errors.len(), 1, "{host}: {errors:?}");
            assert!(
                errors[0].starts_with("spec.controlPlaneEndpoint.host: Invalid value"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn load_balancer_image_and_template_ref_are_checked() {
        let mut spec = DockerClusterSpec::default();
        spec.load_balancer.image_repository = "registry.example.com:5000/kindest".into();
        spec.load_balancer.image_tag = "v20230606-42a2262b".into();
        spec.load_balancer.custom_haproxy_config_template_ref =
            Some(crate::api::LocalObjectReference {
                name: "lb-config".into(),
            });
        assert!(validate_spec(&spec, "spec").is_empty());

        spec.load_balancer.image_repository = "Not A Repo".into();
        spec.load_balancer.image_tag = "-bad".into();
        spec.load_balancer.custom_haproxy_config_template_ref =
            Some(crate::api::LocalObjectReference {
                name: String::new(),
            });
        let errors = messages(&validate_spec(&spec, "spec.template.spec"));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.template.spec.loadBalancer.imageRepository: Invalid value")
        );
        assert!(errors[1].starts_with("spec.template.spec.loadBalancer.imageTag: Invalid value"));
        assert!(errors[2].starts_with(
            "spec.template.spec.loadBalancer.customHAProxyConfigTemplateRef.name: Required value"
        ));
    }

    #[test]
    fn updates_ratchet_on_errors_the_stored_object_had() {
        let mut old = DockerCluster::new("c", DockerClusterSpec::default());
        old.spec.failure_domains = vec![fd("b", None), fd("a", None)];
        let mut new = old.clone();
        new.spec.control_plane_endpoint.host = "172.18.0.2".into();
        let info = RequestInfo {
            update: true,
            dry_run: false,
        };
        assert!(
            DockerClusterWebhook::validate(&new, Some(&old), info, Features::default()).is_empty()
        );
        assert_eq!(
            DockerClusterWebhook::validate(&new, None, info, Features::default()).len(),
            1
        );
        new.spec.control_plane_endpoint.host = "bad host".into();
        assert_eq!(
            DockerClusterWebhook::validate(&new, Some(&old), info, Features::default()).len(),
            1
        );
    }

    fn template(spec: DockerClusterSpec) -> DockerClusterTemplate {
        let mut t = DockerClusterTemplate::new("t", DockerClusterTemplateSpec::default());
        t.spec.template.spec = spec;
        t
    }

    #[test]
    fn template_creation_needs_the_cluster_topology_gate() {
        let t = template(DockerClusterSpec::default());
        let create = RequestInfo::default();
        let errors = messages(&DockerClusterTemplateWebhook::validate(
            &t,
            None,
            create,
            Features::default(),
        ));
        assert_eq!(
            errors,
            ["spec: Forbidden: can be set only if the ClusterTopology feature flag is enabled"]
        );
        let on = Features {
            cluster_topology: true,
        };
        assert!(DockerClusterTemplateWebhook::validate(&t, None, create, on).is_empty());
    }

    #[test]
    fn template_spec_is_immutable_after_defaulting_except_in_topology_dry_runs() {
        let on = Features {
            cluster_topology: true,
        };
        let update = RequestInfo {
            update: true,
            dry_run: false,
        };
        let old = template(DockerClusterSpec::default());
        let mut same_after_defaulting = old.clone();
        same_after_defaulting
            .spec
            .template
            .spec
            .control_plane_endpoint
            .port = 6443;
        assert!(
            DockerClusterTemplateWebhook::validate(&same_after_defaulting, Some(&old), update, on)
                .is_empty()
        );

        let mut changed = old.clone();
        changed.spec.template.spec.load_balancer.image_tag = "v2".into();
        let errors = messages(&DockerClusterTemplateWebhook::validate(
            &changed,
            Some(&old),
            update,
            on,
        ));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("DockerClusterTemplate spec.template.spec field is immutable")
                && errors[0].contains(r#"Diff: loadBalancer.imageTag: (unset) -> "v2""#),
            "{errors:?}"
        );

        let dry_run = RequestInfo {
            update: true,
            dry_run: true,
        };
        assert_eq!(
            DockerClusterTemplateWebhook::validate(&changed, Some(&old), dry_run, on).len(),
            1,
            "a dry run without the annotation"
        );
        changed.metadata.annotations =
            Some([(TOPOLOGY_DRY_RUN_ANNOTATION.to_owned(), String::new())].into());
        assert!(
            DockerClusterTemplateWebhook::validate(&changed, Some(&old), dry_run, on).is_empty()
        );
        assert_eq!(
            DockerClusterTemplateWebhook::validate(&changed, Some(&old), update, on).len(),
            1,
            "the annotation without a dry run"
        );
    }

    #[test]
    fn template_metadata_is_validated() {
        let on = Features {
            cluster_topology: true,
        };
        let mut t = template(DockerClusterSpec::default());
        t.spec
            .template
            .metadata
            .labels
            .insert("bad key!".into(), "v".into());
        let errors = messages(&DockerClusterTemplateWebhook::validate(
            &t,
            None,
            RequestInfo::default(),
            on,
        ));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("spec.template.metadata.labels: Invalid value"),
            "{errors:?}"
        );
    }
}
