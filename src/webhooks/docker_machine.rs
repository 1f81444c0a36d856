//! Validation of `DockerMachine` and `DockerMachineTemplate` (CAPD v1.14's rules plus the
//! checks a careful user expects), as pure functions. Neither kind has defaults.

use super::admission::{AdmissionKind, Features, RequestInfo};
use super::field::{self, FieldError};
use super::rules;
use crate::api::common::TemplateObjectMeta;
use crate::api::{DockerMachine, DockerMachineSpec, DockerMachineTemplate};
use crate::formats;

/// Every rule a DockerMachine spec at `path` breaks.
pub fn validate_spec(spec: &DockerMachineSpec, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !spec.custom_image.is_empty()
        && let Err(detail) = formats::image_reference(&spec.custom_image)
    {
        errors.push(FieldError::invalid(
            field::join(path, "customImage"),
            spec.custom_image.as_str(),
            detail,
        ));
    }
    let images = field::join(path, "preLoadImages");
    for (i, image) in spec.pre_load_images.iter().enumerate() {
        if let Err(detail) = formats::image_reference(image) {
            errors.push(FieldError::invalid(
                field::index(&images, i),
                image.as_str(),
                detail,
            ));
        }
    }
    let mounts = field::join(path, "extraMounts");
    for (i, mount) in spec.extra_mounts.iter().enumerate() {
        let mount_path = field::index(&mounts, i);
        let container_path = field::join(&mount_path, "containerPath");
        if mount.container_path.is_empty() {
            errors.push(FieldError::required(
                container_path,
                "the absolute path of the mount in the node",
            ));
        } else if let Err(detail) = formats::absolute_path(&mount.container_path) {
            errors.push(FieldError::invalid(
                container_path,
                mount.container_path.as_str(),
                detail,
            ));
        }
        if mount.host_path.is_empty() {
            errors.push(FieldError::required(
                field::join(&mount_path, "hostPath"),
                "a path on the Docker host (or the name of a Docker volume)",
            ));
        }
    }
    if let Some(timeout) = &spec.bootstrap_timeout
        && let Err(detail) = formats::positive_duration(timeout)
    {
        errors.push(FieldError::invalid(
            field::join(path, "bootstrapTimeout"),
            timeout.as_str(),
            detail,
        ));
    }
    errors
}

/// Admission of DockerMachines.
pub struct DockerMachineWebhook;

impl AdmissionKind for DockerMachineWebhook {
    type Object = DockerMachine;
    const KIND: &'static str = "DockerMachine";

    fn validate(
        new: &DockerMachine,
        old: Option<&DockerMachine>,
        _: RequestInfo,
        _: Features,
    ) -> Vec<FieldError> {
        let mut errors = rules::ratchet(
            validate_spec(&new.spec, "spec"),
            old.map(|o| validate_spec(&o.spec, "spec")),
        );
        if let Some(old) = old
            && old.spec.custom_image != new.spec.custom_image
        {
            errors.push(FieldError::forbidden(
                "spec.customImage",
                "cannot be modified",
            ));
        }
        errors
    }
}

/// Admission of DockerMachineTemplates.
pub struct DockerMachineTemplateWebhook;

impl AdmissionKind for DockerMachineTemplateWebhook {
    type Object = DockerMachineTemplate;
    const KIND: &'static str = "DockerMachineTemplate";

    fn validate(
        new: &DockerMachineTemplate,
        old: Option<&DockerMachineTemplate>,
        info: RequestInfo,
        _: Features,
    ) -> Vec<FieldError> {
        fn parts(t: &DockerMachineTemplate) -> (&DockerMachineSpec, &TemplateObjectMeta) {
            (&t.spec.template.spec, &t.spec.template.metadata)
        }
        rules::validate_template(
            Self::KIND,
            parts(new),
            old.map(parts),
            rules::is_topology_dry_run(info, new.metadata.annotations.as_ref()),
            validate_spec,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::capi::TOPOLOGY_DRY_RUN_ANNOTATION;
    use crate::api::{DockerMachineTemplateResource, DockerMachineTemplateSpec, Mount};

    fn messages(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    fn mount(container: &str, host: &str) -> Mount {
        Mount {
            container_path: container.into(),
            host_path: host.into(),
            read_only: false,
        }
    }

    #[test]
    fn a_careful_spec_is_accepted() {
        let spec = DockerMachineSpec {
            custom_image: "kindest/node:v1.35.0".into(),
            pre_load_images: vec![
                "busybox:1.36".into(),
                "registry.example.com:5000/team/app@sha256:".to_owned() + &"a".repeat(64),
            ],
            extra_mounts: vec![
                mount("/var/run/docker.sock", "/var/run/docker.sock"),
                mount("/data", "named-volume"),
            ],
            bootstrap_timeout: Some("1h30m".into()),
            ..Default::default()
        };
        assert!(
            validate_spec(&spec, "spec").is_empty(),
            "{:?}",
            validate_spec(&spec, "spec")
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let spec = DockerMachineSpec {
            custom_image: "Kindest/Node".into(),
            pre_load_images: vec!["busybox".into(), "not an image".into()],
            extra_mounts: vec![
                mount("", "/h"),
                mount("relative/path", ""),
                mount("/ok", "/ok"),
            ],
            bootstrap_timeout: Some("5 minutes".into()),
            ..Default::default()
        };
        let errors = messages(&validate_spec(&spec, "spec"));
        let paths: Vec<&str> = errors
            .iter()
            .map(|e| e.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "spec.customImage",
                "spec.preLoadImages[1]",
                "spec.extraMounts[0].containerPath",
                "spec.extraMounts[1].containerPath",
                "spec.extraMounts[1].hostPath",
                "spec.bootstrapTimeout"
            ],
            "{errors:?}"
        );
        assert!(errors[2].contains("Required value"));
        assert!(errors[3].contains("must be an absolute path"), "{errors:?}");
    }

    #[test]
    fn bootstrap_timeout_must_be_positive() {
        for (timeout, ok) in [
            ("5m", true),
            ("90s", true),
            ("0s", false),
            ("0", false),
            ("-5m", false),
            ("5", false),
        ] {
            let spec = DockerMachineSpec {
                bootstrap_timeout: Some(timeout.into()),
                ..Default::default()
            };
            assert_eq!(validate_spec(&spec, "spec").is_empty(), ok, "{timeout}");
        }
    }

    #[test]
    fn custom_image_cannot_change() {
        let old = DockerMachine::new(
            "m",
            DockerMachineSpec {
                custom_image: "kindest/node:v1.35.0".into(),
                ..Default::default()
            },
        );
        let update = RequestInfo {
            update: true,
            dry_run: false,
        };
        let mut new = old.clone();
        new.spec.provider_id = "docker:////m".into();
        assert!(
            DockerMachineWebhook::validate(&new, Some(&old), update, Features::default())
                .is_empty()
        );
        new.spec.custom_image = "kindest/node:v1.36.0".into();
        assert_eq!(
            messages(&DockerMachineWebhook::validate(
                &new,
                Some(&old),
                update,
                Features::default()
            )),
            ["spec.customImage: Forbidden: cannot be modified"]
        );
        new.spec.custom_image = String::new();
        assert_eq!(
            DockerMachineWebhook::validate(&new, Some(&old), update, Features::default()).len(),
            1,
            "unsetting is a change"
        );
    }

    fn template(spec: DockerMachineSpec) -> DockerMachineTemplate {
        DockerMachineTemplate::new(
            "t",
            DockerMachineTemplateSpec {
                template: DockerMachineTemplateResource {
                    metadata: TemplateObjectMeta::default(),
                    spec,
                },
            },
        )
    }

    #[test]
    fn template_spec_is_immutable_except_in_topology_dry_runs() {
        let old = template(DockerMachineSpec::default());
        let mut new = template(DockerMachineSpec {
            custom_image: "kindest/node:v1.36.0".into(),
            ..Default::default()
        });
        let update = RequestInfo {
            update: true,
            dry_run: false,
        };
        let errors = messages(&DockerMachineTemplateWebhook::validate(
            &new,
            Some(&old),
            update,
            Features::default(),
        ));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("DockerMachineTemplate spec.template.spec field is immutable")
                && errors[0].contains("customImage: (unset)"),
            "{errors:?}"
        );

        new.metadata.annotations =
            Some([(TOPOLOGY_DRY_RUN_ANNOTATION.to_owned(), String::new())].into());
        let dry_run = RequestInfo {
            update: true,
            dry_run: true,
        };
        assert!(
            DockerMachineTemplateWebhook::validate(&new, Some(&old), dry_run, Features::default())
                .is_empty()
        );
        let same = template(DockerMachineSpec::default());
        assert!(
            DockerMachineTemplateWebhook::validate(&same, Some(&old), update, Features::default())
                .is_empty()
        );
    }

    #[test]
    fn template_create_checks_spec_and_metadata() {
        let mut t = template(DockerMachineSpec {
            bootstrap_timeout: Some("soon".into()),
            ..Default::default()
        });
        t.spec
            .template
            .metadata
            .annotations
            .insert("a/b/c".into(), "v".into());
        let errors = messages(&DockerMachineTemplateWebhook::validate(
            &t,
            None,
            RequestInfo::default(),
            Features::default(),
        ));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("spec.template.spec.bootstrapTimeout: Invalid value"));
        assert!(errors[1].starts_with("spec.template.metadata.annotations: Invalid value"));
    }
}
