//! Image references, as `github.com/distribution/reference` (what `docker pull` uses) checks them.

use super::is_lower_alnum;

const IMAGE_NAME_TOTAL_LENGTH_MAX: usize = 255;
const IMAGE_TAG_MAX_LENGTH: usize = 128;
const DOCKER_HUB_DOMAIN: &str = "docker.io";
const DOCKER_HUB_LEGACY_DOMAIN: &str = "index.docker.io";
const DOCKER_HUB_OFFICIAL_PREFIX: &str = "library/";

/// `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`: one registry domain component.
fn is_domain_component(component: &str) -> bool {
    let b = component.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        }
        _ => false,
    }
}

/// `[0-9]+`: a registry port.
fn is_port(port: &str) -> bool {
    !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit())
}

/// `host[:port]` where host is `domain-component('.' domain-component)*` or `\[[a-fA-F0-9:]+\]`.
fn is_registry_domain(domain: &str) -> bool {
    if let Some(rest) = domain.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        let host_ok =
            !inner.is_empty() && inner.bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
        return host_ok && (after.is_empty() || after.strip_prefix(':').is_some_and(is_port));
    }
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    host.split('.').all(is_domain_component) && port.is_none_or(is_port)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: one repository path component.
fn is_path_component(component: &str) -> bool {
    let b = component.as_bytes();
    let mut i = 0;
    loop {
        let run = b[i..].iter().take_while(|&&c| is_lower_alnum(c)).count();
        if run == 0 {
            return false;
        }
        i += run;
        if i == b.len() {
            return true;
        }
        let sep_len = b[i..].iter().take_while(|&&c| !is_lower_alnum(c)).count();
        let sep = &b[i..i + sep_len];
        if !(sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&c| c == b'-')) {
            return false;
        }
        i += sep_len;
    }
}

/// `[\w][\w.-]{0,127}`: an image tag.
fn is_tag(tag: &str) -> bool {
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    b.len() <= IMAGE_TAG_MAX_LENGTH
        && b.first().is_some_and(|&c| is_word(c))
        && b.iter().all(|&c| is_word(c) || c == b'.' || c == b'-')
}

/// `algorithm:hex`, algorithm `[a-z0-9]+([+._-][a-z0-9]+)*`; sha256, sha384 and sha512 need exactly
/// 64, 96 and 128 lowercase hex characters (as go-digest), other algorithms at least 32 hex characters.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm
        .split(['+', '.', '_', '-'])
        .all(|component| !component.is_empty() && component.bytes().all(is_lower_alnum));
    if !algorithm_ok {
        return false;
    }
    let exact_length = match algorithm {
        "sha256" => Some(64),
        "sha384" => Some(96),
        "sha512" => Some(128),
        _ => None,
    };
    match exact_length {
        Some(length) => {
            encoded.len() == length
                && encoded
                    .bytes()
                    .all(|c| c.is_ascii_digit() || matches!(c, b'a'..=b'f'))
        }
        None => encoded.len() >= 32 && encoded.bytes().all(|c| c.is_ascii_hexdigit()),
    }
}

/// Checks an image reference `[domain[:port]/]path[:tag][@digest]` as `docker pull` accepts it.
pub fn image_reference(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_string());
    }
    if value.len() == 64
        && value
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'a'..=b'f'))
    {
        return Err("cannot specify 64-byte hexadecimal strings".to_string());
    }
    // Docker's splitDockerDomain: the first component names a registry when it has a '.' or a
    // ':', is "localhost", or has an uppercase letter (repository paths are lowercase).
    let (domain, remainder) = match value.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (Some(first), rest)
        }
        _ => (None, value),
    };
    let remote_name = remainder
        .split_once(':')
        .map_or(remainder, |(name, _)| name);
    if remote_name.to_lowercase() != remote_name {
        return Err("invalid reference format: repository name must be lowercase".to_string());
    }
    if let Some(domain) = domain
        && !is_registry_domain(domain)
    {
        return Err("invalid reference format: invalid registry host".to_string());
    }
    let (name_and_tag, digest) = match remainder.split_once('@') {
        Some((name_and_tag, digest)) => (name_and_tag, Some(digest)),
        None => (remainder, None),
    };
    let (path, tag) = match name_and_tag.split_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (name_and_tag, None),
    };
    if !path.split('/').all(is_path_component) {
        return Err("invalid reference format: invalid repository path".to_string());
    }
    if tag.is_some_and(|tag| !is_tag(tag)) {
        return Err("invalid reference format: invalid tag".to_string());
    }
    if digest.is_some_and(|digest| !is_digest(digest)) {
        return Err("invalid reference format: invalid digest".to_string());
    }
    // The limit applies to the normalized name, e.g. "docker.io/library/busybox" for "busybox".
    let normalized_domain = match domain {
        None | Some(DOCKER_HUB_LEGACY_DOMAIN) => DOCKER_HUB_DOMAIN,
        Some(domain) => domain,
    };
    let official_prefix = if normalized_domain == DOCKER_HUB_DOMAIN && !path.contains('/') {
        DOCKER_HUB_OFFICIAL_PREFIX.len()
    } else {
        0
    };
    if normalized_domain.len() + 1 + official_prefix + path.len() > IMAGE_NAME_TOTAL_LENGTH_MAX {
        return Err(format!(
            "repository name must not be more than {IMAGE_NAME_TOTAL_LENGTH_MAX} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::test_helpers::*;

    // ---------------------------------------------------------------- image_reference

    #[test]
    fn image_reference_accepts_the_documented_examples() {
        let pinned = format!("kindest/node:v1.35.0@sha256:{SHA256}");
        for v in [
            "busybox",
            "busybox:1.36",
            "kindest/node:v1.35.0",
            pinned.as_str(),
            "registry.example.com:5000/team/app:v1",
            "localhost/app",
            "ghcr.io/a/b/c:latest",
            "docker.io/library/busybox",
        ] {
            ok(image_reference(v), v);
        }
    }

    #[test]
    fn image_reference_accepts_other_valid_references() {
        let sha384 = "a".repeat(96);
        let sha512 = "b".repeat(128);
        let refs = [
            format!("busybox@sha256:{SHA256}"),
            format!("app:tag@sha512:{sha512}"),
            format!("app@sha384:{sha384}"),
            format!("app@multihash+b58:{}", "0123456789ABCDEFabcdef0123456789"),
            format!("{}:tag", SHA256),
            SHA256[..63].to_string(),
            "[::1]:5000/app".to_string(),
            "[::1]/app".to_string(),
            "[2001:db8::1]:443/a/b:c".to_string(),
            "192.168.1.1:5000/app:tag".to_string(),
            "localhost:5000/app".to_string(),
            "localhost".to_string(),
            "localhost:5000".to_string(),
            "registry:5000".to_string(),
            "Registry.Example.COM/app".to_string(),
            "MyRegistry/app".to_string(),
            "sub-domain.example.com/x".to_string(),
            "a__b".to_string(),
            "a_b".to_string(),
            "a.b".to_string(),
            "a-b".to_string(),
            "a---b".to_string(),
            "a.b_c__d-e--f".to_string(),
            "0".to_string(),
            "kindest/haproxy:v20230606-42a2262b".to_string(),
            "app:_x".to_string(),
            "app:X.Y-Z_1".to_string(),
            "index.docker.io/busybox".to_string(),
        ];
        for v in &refs {
            ok(image_reference(v), v);
        }
    }

    #[test]
    fn image_reference_refuses_the_documented_examples() {
        for v in [
            "",
            "Busybox",
            "busybox:",
            ":tag",
            "busybox@sha256:abc",
            "a//b",
            "-a",
            "a:b:c",
            "a b",
            "https://x/y",
        ] {
            err(image_reference(v), v);
        }
    }

    #[test]
    fn image_reference_refuses_other_invalid_references() {
        let refs = [
            SHA256.to_string(),
            format!("app@sha256:{}", SHA256.to_uppercase()),
            format!("app@sha256:{}", &SHA256[..63]),
            format!("app@sha256:{SHA256}0"),
            format!("app@sha512:{SHA256}"),
            format!("app@sha384:{SHA256}"),
            format!("app@md5:{}", "a".repeat(31)),
            format!("app@md5:{}", "g".repeat(32)),
            format!("app@SHA256:{SHA256}"),
            format!("app@sha256-:{SHA256}"),
            format!("app@+sha256:{SHA256}"),
            format!("app@:{SHA256}"),
            format!("app@@sha256:{SHA256}"),
            format!("app@sha256:{SHA256}@sha256:{SHA256}"),
            format!("app@sha256{SHA256}"),
            format!("app@sha256:{SHA256}:tag"),
            "app@".to_string(),
            "app:".to_string(),
            "app:tag:tag".to_string(),
            "app:.x".to_string(),
            "app:-x".to_string(),
            "app:a/b".to_string(),
            "app:é".to_string(),
            "reg.io/".to_string(),
            "reg.io//app".to_string(),
            "reg.io:/app".to_string(),
            "reg.io:abc/app".to_string(),
            "reg.io:5000:1/app".to_string(),
            "[::1/app".to_string(),
            "[]:5000/app".to_string(),
            "[zz]/app".to_string(),
            "[::1]x/app".to_string(),
            "[::1]:/app".to_string(),
            "-reg.io/app".to_string(),
            "reg-.io/app".to_string(),
            "reg..io/app".to_string(),
            "reg_x.io/app".to_string(),
            "Team/App".to_string(),
            "team/App".to_string(),
            "reg.io/Team/app".to_string(),
            "a.-b".to_string(),
            "a___b".to_string(),
            "a._b".to_string(),
            "a-".to_string(),
            "a_".to_string(),
            "a.".to_string(),
            ".a".to_string(),
            "_a".to_string(),
            "a/".to_string(),
            "/a".to_string(),
            "app/".to_string(),
            "é".to_string(),
            "Ü/app".to_string(),
            "reg.io/é".to_string(),
            "appé:tag".to_string(),
            "http://reg.io/app".to_string(),
            "reg.io/app:v1/extra".to_string(),
            " busybox".to_string(),
            "busybox ".to_string(),
        ];
        for v in &refs {
            err(image_reference(v), v);
        }
    }

    #[test]
    fn image_reference_messages() {
        assert_eq!(
            image_reference("Busybox"),
            Err("invalid reference format: repository name must be lowercase".to_string())
        );
        assert_eq!(image_reference(""), Err("must not be empty".to_string()));
        assert_eq!(
            image_reference(SHA256),
            Err("cannot specify 64-byte hexadecimal strings".to_string())
        );
        assert_eq!(
            image_reference("a//b"),
            Err("invalid reference format: invalid repository path".to_string())
        );
        assert_eq!(
            image_reference("busybox:"),
            Err("invalid reference format: invalid tag".to_string())
        );
        assert_eq!(
            image_reference("busybox@sha256:abc"),
            Err("invalid reference format: invalid digest".to_string())
        );
        assert_eq!(
            image_reference("https://x/y"),
            Err("invalid reference format: invalid registry host".to_string())
        );
    }

    #[test]
    fn image_reference_tag_length_limit() {
        let tag128 = format!("app:{}", "t".repeat(128));
        ok(image_reference(&tag128), &tag128);
        let tag129 = format!("app:{}", "t".repeat(129));
        assert_eq!(
            image_reference(&tag129),
            Err("invalid reference format: invalid tag".to_string())
        );
    }

    #[test]
    fn image_reference_name_length_limit_with_a_registry() {
        let too_long = "repository name must not be more than 255 characters".to_string();
        // "reg.io/" is 7 characters; the tag and digest do not count.
        let at_limit = format!(
            "reg.io/{}:{}@sha256:{SHA256}",
            "a".repeat(248),
            "t".repeat(128)
        );
        ok(image_reference(&at_limit), &at_limit);
        let over = format!("reg.io/{}", "a".repeat(249));
        assert_eq!(image_reference(&over), Err(too_long.clone()));
        let nested_at_limit = format!("reg.io/{}/{}", "a".repeat(124), "b".repeat(123));
        ok(image_reference(&nested_at_limit), &nested_at_limit);
        let nested_over = format!("reg.io/{}/{}", "a".repeat(124), "b".repeat(124));
        assert_eq!(image_reference(&nested_over), Err(too_long));
    }

    #[test]
    fn image_reference_name_length_limit_on_docker_hub() {
        // Docker measures the normalized name: "docker.io/library/<name>" (18 extra characters)
        // for an official image, "docker.io/<team>/<name>" (10) otherwise.
        let official = "a".repeat(237);
        ok(image_reference(&official), "237-character official image");
        err(
            image_reference(&"a".repeat(238)),
            "238-character official image",
        );
        let legacy = format!("index.docker.io/{official}");
        ok(
            image_reference(&legacy),
            "index.docker.io and 237 characters",
        );
        let legacy_over = format!("index.docker.io/{}", "a".repeat(238));
        err(
            image_reference(&legacy_over),
            "index.docker.io and 238 characters",
        );
        let team = format!("team/{}", "a".repeat(240));
        ok(image_reference(&team), "team image at the limit");
        let team_over = format!("team/{}", "a".repeat(241));
        err(image_reference(&team_over), "team image over the limit");
    }
}
