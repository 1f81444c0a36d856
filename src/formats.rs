//! Pure checks of the string formats Kubernetes and Docker use (DNS names, label keys and values,
//! annotation sizes, image references, paths and Go durations), for the admission webhooks.
//!
//! Every check returns `Err` with a short human-readable reason that names neither the field nor
//! the value: the caller adds both. The Kubernetes checks follow
//! `k8s.io/apimachinery/pkg/util/validation` (rules and wording); the image reference check
//! follows `github.com/distribution/reference` as `docker pull` uses it; the duration parser
//! follows Go's `time.ParseDuration`. No function panics, whatever the input.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
     characters, '-' or '.', and must start and end with an alphanumeric character";

const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and \
     end with an alphanumeric character";

const LABEL_VALUE_MAX_LENGTH: usize = 63;
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, \
     '-', '_' or '.', and must start and end with an alphanumeric character";

const DNS_NAME_MAX_LENGTH: usize = 253;
const DNS_LABEL_MAX_LENGTH: usize = 63;
const IP_OR_DNS_NAME_MSG: &str = "must be an IP address or a DNS name";

const IMAGE_NAME_TOTAL_LENGTH_MAX: usize = 255;
const IMAGE_TAG_MAX_LENGTH: usize = 128;
const DOCKER_HUB_DOMAIN: &str = "docker.io";
const DOCKER_HUB_LEGACY_DOMAIN: &str = "index.docker.io";
const DOCKER_HUB_OFFICIAL_PREFIX: &str = "library/";

const DURATION_MSG: &str = r#"must be a duration such as "5m", "90s" or "1h30m""#;
/// 1<<63: the magnitude of Go's most negative `time.Duration`, in nanoseconds.
const GO_DURATION_NEG_LIMIT: u64 = 1 << 63;

/// The most bytes (keys plus values) a Kubernetes object's annotations may hold in total.
pub const ANNOTATIONS_TOTAL_SIZE_LIMIT: usize = 256 * 1024;

/// Kubernetes' `MaxLenError`.
fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Kubernetes' `RegexError`, with its wording (and its double spaces between examples).
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(example);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

/// Ok when there is no error, else every error joined with "; ".
fn join_errors(errors: Vec<String>) -> Result<(), String> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, with no length limit.
fn matches_dns1123_label(label: &str) -> bool {
    let b = label.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// The DNS-1123 subdomain regex, with no length limit.
fn matches_dns1123_subdomain(value: &str) -> bool {
    value.split('.').all(matches_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, with no length limit.
fn matches_qualified_name(value: &str) -> bool {
    let b = value.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Checks a lowercase RFC 1123 subdomain, at most 253 characters (`IsDNS1123Subdomain`).
pub fn dns1123_subdomain(value: &str) -> Result<(), String> {
    join_errors(dns1123_subdomain_errors(value))
}

/// Every message Kubernetes' `IsDNS1123Subdomain` gives for `value`.
fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errors
}

/// One hostname label: 1..=63 of `[A-Za-z0-9-]`, not starting or ending with '-'.
fn is_hostname_label(label: &str) -> bool {
    let b = label.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            b.len() <= DNS_LABEL_MAX_LENGTH
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        }
        _ => false,
    }
}

/// An RFC 1123 host name, any case, with an optional trailing dot; its last label may not be
/// all digits (RFC 1123 section 2.1: a host name never has the dotted-decimal form).
fn is_dns_hostname(value: &str) -> bool {
    let name = value.strip_suffix('.').unwrap_or(value);
    if name.is_empty() || name.len() > DNS_NAME_MAX_LENGTH {
        return false;
    }
    let mut last = "";
    for label in name.split('.') {
        if !is_hostname_label(label) {
            return false;
        }
        last = label;
    }
    !last.bytes().all(|c| c.is_ascii_digit())
}

/// Checks an IPv4 or IPv6 address (unbracketed, no port) or an RFC 1123 DNS host name.
pub fn ip_or_dns_name(value: &str) -> Result<(), String> {
    if value.parse::<Ipv4Addr>().is_ok()
        || value.parse::<Ipv6Addr>().is_ok()
        || is_dns_hostname(value)
    {
        Ok(())
    } else {
        Err(IP_OR_DNS_NAME_MSG.to_string())
    }
}

/// Checks a label or annotation key: `[prefix/]name` (Kubernetes' `IsQualifiedName`).
pub fn qualified_name(value: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                errors.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return Err(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errors.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    join_errors(errors)
}

/// Checks a label value: empty, or up to 63 name characters (Kubernetes' `IsValidLabelValue`).
pub fn label_value(value: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errors.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name(value) {
        errors.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    join_errors(errors)
}

/// Checks that annotations hold at most [`ANNOTATIONS_TOTAL_SIZE_LIMIT`] bytes of keys and values.
pub fn annotations_size(annotations: &BTreeMap<String, String>) -> Result<(), String> {
    let total = annotations.iter().fold(0usize, |sum, (key, value)| {
        sum.saturating_add(key.len()).saturating_add(value.len())
    });
    if total > ANNOTATIONS_TOTAL_SIZE_LIMIT {
        Err(format!(
            "must have at most {ANNOTATIONS_TOTAL_SIZE_LIMIT} bytes"
        ))
    } else {
        Ok(())
    }
}

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

/// Checks a non-empty absolute path (starting with '/') without NUL bytes.
pub fn absolute_path(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err("must not be empty".to_string())
    } else if !value.starts_with('/') {
        Err("must be an absolute path".to_string())
    } else if value.contains('\0') {
        Err("must not contain a NUL byte".to_string())
    } else {
        Ok(())
    }
}

/// A Go `time.Duration` as a sign and a magnitude; `negative` is false for zero, and the
/// magnitude is at most 2^63-1 ns (2^63 ns when negative), the range of Go's int64 nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    /// Whether the duration is below zero (never true for a zero magnitude).
    pub negative: bool,
    /// The absolute value of the duration.
    pub magnitude: Duration,
}

impl GoDuration {
    /// The duration as a `std::time::Duration`, or None when it is negative.
    pub fn as_std(&self) -> Option<Duration> {
        if self.negative {
            None
        } else {
            Some(self.magnitude)
        }
    }
}

/// The nanoseconds in one of Go's duration units.
fn go_duration_unit(unit: &[u8]) -> Option<u64> {
    match unit {
        b"ns" => Some(1),
        // "us", "µs" (U+00B5 MICRO SIGN) and "μs" (U+03BC GREEK SMALL LETTER MU), in UTF-8.
        b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => Some(1_000),
        b"ms" => Some(1_000_000),
        b"s" => Some(1_000_000_000),
        b"m" => Some(60 * 1_000_000_000),
        b"h" => Some(3_600 * 1_000_000_000),
        _ => None,
    }
}

/// Go's `leadingInt`: the leading `[0-9]*` of `s`, or None above 2^63.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut x: u64 = 0;
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    for &c in &s[..digits] {
        if x > GO_DURATION_NEG_LIMIT / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > GO_DURATION_NEG_LIMIT {
            return None;
        }
    }
    Some((x, &s[digits..]))
}

/// Go's `leadingFraction`: the leading `[0-9]*` of `s` as a numerator and a scale, dropping the
/// digits that no longer fit.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let mut x: u64 = 0;
    let mut scale = 1.0_f64;
    let mut overflow = false;
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    for &c in &s[..digits] {
        if overflow {
            continue;
        }
        if x > (GO_DURATION_NEG_LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > GO_DURATION_NEG_LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[digits..])
}

/// Parses a Go duration ("300ms", "-1.5h", "2h45m") exactly as Go's `time.ParseDuration`.
pub fn parse_go_duration(value: &str) -> Result<GoDuration, String> {
    let invalid = || DURATION_MSG.to_string();
    let mut s = value.as_bytes();
    let mut negative = false;
    if let Some((&sign, rest)) = s.split_first()
        && (sign == b'-' || sign == b'+')
    {
        negative = sign == b'-';
        s = rest;
    }
    if s == b"0" {
        return Ok(GoDuration {
            negative: false,
            magnitude: Duration::ZERO,
        });
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while let Some(&first) = s.first() {
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        let before = s.len();
        let (mut v, rest) = leading_int(s).ok_or_else(invalid)?;
        s = rest;
        let pre = before != s.len();
        let mut post = false;
        let (mut f, mut scale) = (0_u64, 1.0_f64);
        if let Some((&b'.', rest)) = s.split_first() {
            let before = rest.len();
            (f, scale, s) = leading_fraction(rest);
            post = before != s.len();
        }
        if !pre && !post {
            return Err(invalid());
        }
        let unit_len = s
            .iter()
            .take_while(|&&c| c != b'.' && !c.is_ascii_digit())
            .count();
        if unit_len == 0 {
            return Err(invalid());
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let unit = go_duration_unit(unit).ok_or_else(invalid)?;
        if v > GO_DURATION_NEG_LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // As Go: float64 keeps fractions of hours nanosecond-accurate.
            v = v.saturating_add((f as f64 * (unit as f64 / scale)) as u64);
            if v > GO_DURATION_NEG_LIMIT {
                return Err(invalid());
            }
        }
        // Go's uint64 sum can wrap here ("-9223372036854775808ns9223372036854775808ns" gives 0);
        // a checked sum refuses that instead.
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > GO_DURATION_NEG_LIMIT {
            return Err(invalid());
        }
    }
    if !negative && total > GO_DURATION_NEG_LIMIT - 1 {
        return Err(invalid());
    }
    Ok(GoDuration {
        negative: negative && total != 0,
        magnitude: Duration::from_nanos(total),
    })
}

/// Parses a Go duration that must be greater than zero.
pub fn positive_duration(value: &str) -> Result<Duration, String> {
    let duration = parse_go_duration(value)?;
    match duration.as_std() {
        Some(magnitude) if !magnitude.is_zero() => Ok(magnitude),
        _ => Err("must be greater than zero".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ok(result: Result<(), String>, value: &str) {
        assert_eq!(result, Ok(()), "{value:?} should be accepted");
    }

    fn err(result: Result<(), String>, value: &str) -> String {
        match result {
            Ok(()) => panic!("{value:?} should be refused"),
            Err(msg) => {
                assert!(!msg.is_empty(), "{value:?}: empty message");
                msg
            }
        }
    }

    /// `n` labels of `label_len` copies of `c`, joined with dots.
    fn dotted(c: char, label_len: usize, n: usize) -> String {
        vec![c.to_string().repeat(label_len); n].join(".")
    }

    // ---------------------------------------------------------------- dns1123_subdomain

    #[test]
    fn dns1123_subdomain_accepts_valid_names() {
        for v in [
            "a",
            "0",
            "example.com",
            "a-b.c-d",
            "a--b",
            "1.2.3.4",
            "my-config-map",
            "x.y.z",
            "a1b2",
        ] {
            ok(dns1123_subdomain(v), v);
        }
        // Labels are not limited to 63 characters here, only the total.
        let long_label = "a".repeat(100);
        ok(dns1123_subdomain(&long_label), &long_label);
    }

    #[test]
    fn dns1123_subdomain_length_limit() {
        let at_limit = format!("{}.{}", dotted('a', 63, 3), "b".repeat(61));
        assert_eq!(at_limit.len(), 253);
        ok(dns1123_subdomain(&at_limit), &at_limit);
        let over = format!("{at_limit}b");
        assert_eq!(over.len(), 254);
        assert_eq!(
            dns1123_subdomain(&over),
            Err("must be no more than 253 characters".to_string())
        );
        let over_and_bad = format!("{at_limit}-");
        let msg = err(dns1123_subdomain(&over_and_bad), &over_and_bad);
        assert!(
            msg.starts_with("must be no more than 253 characters; a lowercase RFC 1123 subdomain"),
            "{msg}"
        );
    }

    #[test]
    fn dns1123_subdomain_refuses_invalid_names() {
        for v in [
            "",
            "Example.com",
            "A",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            ".",
            "a_b",
            "a b",
            "a/b",
            "é",
            "aé.com",
            "a.-b",
        ] {
            err(dns1123_subdomain(v), v);
        }
    }

    #[test]
    fn dns1123_subdomain_message_matches_kubernetes() {
        assert_eq!(
            dns1123_subdomain("Foo"),
            Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
                 and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
                 validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string())
        );
    }

    // ---------------------------------------------------------------- ip_or_dns_name

    #[test]
    fn ip_or_dns_name_accepts_ip_addresses() {
        for v in [
            "10.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            ok(ip_or_dns_name(v), v);
        }
    }

    #[test]
    fn ip_or_dns_name_accepts_dns_names() {
        for v in [
            "example.com",
            "Example.COM",
            "localhost",
            "a",
            "example.com.",
            "xn--bcher-kva.example",
            "a-b.c",
            "a--b.c",
            "1.2.3.example",
            "123abc",
            "0x1",
            "host-1.cluster.local",
        ] {
            ok(ip_or_dns_name(v), v);
        }
    }

    #[test]
    fn ip_or_dns_name_length_limits() {
        let label63 = "a".repeat(63);
        ok(ip_or_dns_name(&label63), &label63);
        let label64 = "a".repeat(64);
        err(ip_or_dns_name(&label64), &label64);
        let name253 = format!("{}.{}", dotted('a', 63, 3), "b".repeat(61));
        assert_eq!(name253.len(), 253);
        ok(ip_or_dns_name(&name253), &name253);
        let name253_dot = format!("{name253}.");
        ok(ip_or_dns_name(&name253_dot), &name253_dot);
        let name254 = format!("{name253}b");
        err(ip_or_dns_name(&name254), &name254);
    }

    #[test]
    fn ip_or_dns_name_refuses_invalid_values() {
        for v in [
            "",
            " ",
            "a b",
            " example.com",
            "a_b.com",
            "https://x",
            "host:6443",
            "10.0.0.1:80",
            "[::1]",
            "[::1]:6443",
            "-a.com",
            "a-.com",
            "a..b",
            ".",
            "..",
            ".a",
            "example.com..",
            "1.2.3.999",
            "256.0.0.1",
            "010.0.0.1",
            "1.2.3.4.",
            "999",
            "é.com",
            "bücher.example",
            "fe80::1%eth0",
            "::g",
            "a/b",
            "*.example.com",
        ] {
            assert_eq!(
                ip_or_dns_name(v),
                Err("must be an IP address or a DNS name".to_string()),
                "{v:?}"
            );
        }
    }

    // ---------------------------------------------------------------- qualified_name

    #[test]
    fn qualified_name_accepts_valid_keys() {
        for v in [
            "foo",
            "F",
            "9",
            "MyName",
            "my.name",
            "123-abc",
            "Foo_bar.baz-1",
            "a__b",
            "example.com/MyName",
            "a/b",
            "cluster.x-k8s.io/cluster-name",
            "kubernetes.io/hostname",
        ] {
            ok(qualified_name(v), v);
        }
    }

    #[test]
    fn qualified_name_length_limits() {
        let name63 = "n".repeat(63);
        ok(qualified_name(&name63), &name63);
        let name64 = "n".repeat(64);
        assert_eq!(
            qualified_name(&name64),
            Err("name part must be no more than 63 characters".to_string())
        );
        let prefix253 = format!("{}.{}", dotted('a', 63, 3), "b".repeat(61));
        let key = format!("{prefix253}/{name63}");
        ok(qualified_name(&key), &key);
        let key = format!("{prefix253}b/x");
        assert_eq!(
            qualified_name(&key),
            Err("prefix part must be no more than 253 characters".to_string())
        );
    }

    #[test]
    fn qualified_name_refuses_invalid_keys() {
        for v in [
            "",
            "/foo",
            "foo/",
            "/",
            "a/b/c",
            "a//b",
            "-foo",
            "foo-",
            "_foo",
            "foo_",
            ".foo",
            "foo bar",
            "Example.com/foo",
            "-a.com/foo",
            "a_b.com/foo",
            "é",
            "a/é",
            "fooé",
        ] {
            err(qualified_name(v), v);
        }
    }

    #[test]
    fn qualified_name_messages_match_kubernetes() {
        let name_regex = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
                          alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
                          validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
        assert_eq!(qualified_name("-x"), Err(format!("name part {name_regex}")));
        assert_eq!(
            qualified_name(""),
            Err(format!(
                "name part must be non-empty; name part {name_regex}"
            ))
        );
        assert_eq!(
            qualified_name("/x"),
            Err("prefix part must be non-empty".to_string())
        );
        assert_eq!(
            qualified_name("a/b/c"),
            Err(format!(
                "a qualified name {name_regex} with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')"
            ))
        );
        let msg = err(qualified_name("Ex.com/x"), "Ex.com/x");
        assert!(
            msg.starts_with("prefix part a lowercase RFC 1123 subdomain"),
            "{msg}"
        );
        let msg = err(qualified_name("Ex.com/-"), "Ex.com/-");
        assert!(
            msg.starts_with("prefix part a lowercase RFC 1123 subdomain"),
            "{msg}"
        );
        assert!(msg.contains("; name part must consist of"), "{msg}");
    }

    // ---------------------------------------------------------------- label_value

    #[test]
    fn label_value_accepts_valid_values() {
        for v in [
            "", "a", "Z", "0", "MyValue", "my_value", "12345", "a.b-c_d", "a__b", "v1.35.0",
        ] {
            ok(label_value(v), v);
        }
        let at_limit = "v".repeat(63);
        ok(label_value(&at_limit), &at_limit);
    }

    #[test]
    fn label_value_refuses_invalid_values() {
        for v in [
            "-a", "a-", "_a", "a_", ".a", "a.", "a b", "a/b", "é", "aé", "a:b", " ",
        ] {
            err(label_value(v), v);
        }
        let over = "v".repeat(64);
        assert_eq!(
            label_value(&over),
            Err("must be no more than 63 characters".to_string())
        );
        let over_and_bad = format!("{}-", "v".repeat(63));
        let msg = err(label_value(&over_and_bad), &over_and_bad);
        assert!(
            msg.starts_with("must be no more than 63 characters; a valid label must be"),
            "{msg}"
        );
    }

    #[test]
    fn label_value_message_matches_kubernetes() {
        assert_eq!(
            label_value("-"),
            Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', \
                 and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
                 '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .to_string())
        );
    }

    // ---------------------------------------------------------------- annotations_size

    #[test]
    fn annotations_size_limit() {
        assert_eq!(ANNOTATIONS_TOTAL_SIZE_LIMIT, 262_144);
        let mut annotations = BTreeMap::new();
        ok(annotations_size(&annotations), "no annotations");
        annotations.insert(
            "k".to_string(),
            "v".repeat(ANNOTATIONS_TOTAL_SIZE_LIMIT - 1),
        );
        ok(annotations_size(&annotations), "exactly at the limit");
        annotations.insert("x".to_string(), String::new());
        assert_eq!(
            annotations_size(&annotations),
            Err("must have at most 262144 bytes".to_string())
        );
    }

    #[test]
    fn annotations_size_sums_keys_and_values_of_every_entry() {
        let half = ANNOTATIONS_TOTAL_SIZE_LIMIT / 2;
        let mut annotations = BTreeMap::new();
        annotations.insert("a".to_string(), "v".repeat(half - 1));
        annotations.insert("b".to_string(), "v".repeat(half - 1));
        ok(annotations_size(&annotations), "two halves");
        annotations.insert("c".to_string(), String::new());
        err(annotations_size(&annotations), "two halves and a key");
    }

    #[test]
    fn annotations_size_counts_bytes_not_characters() {
        // 131072 two-byte characters: 262144 bytes, plus the key's byte.
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "k".to_string(),
            "é".repeat(ANNOTATIONS_TOTAL_SIZE_LIMIT / 2),
        );
        err(annotations_size(&annotations), "multi-byte value");
    }

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

    // ---------------------------------------------------------------- absolute_path

    #[test]
    fn absolute_path_accepts_absolute_paths() {
        for v in [
            "/",
            "/var/lib/x",
            "/a b",
            "/é/ü",
            "//double",
            "/trailing/",
            "/with/../dots",
        ] {
            ok(absolute_path(v), v);
        }
    }

    #[test]
    fn absolute_path_refuses_other_values() {
        assert_eq!(absolute_path(""), Err("must not be empty".to_string()));
        for v in ["relative", "./x", "../x", "~/x", " /x", "é/x", "C:\\x"] {
            assert_eq!(
                absolute_path(v),
                Err("must be an absolute path".to_string()),
                "{v:?}"
            );
        }
        assert_eq!(
            absolute_path("/a\0b"),
            Err("must not contain a NUL byte".to_string())
        );
    }

    // ---------------------------------------------------------------- Go durations

    const NS: i128 = 1;
    const US: i128 = 1_000;
    const MS: i128 = 1_000_000;
    const SEC: i128 = 1_000_000_000;
    const MIN: i128 = 60 * SEC;
    const HOUR: i128 = 60 * MIN;

    fn signed_nanos(d: GoDuration) -> i128 {
        let magnitude = d.magnitude.as_nanos() as i128;
        if d.negative { -magnitude } else { magnitude }
    }

    /// Go's own `parseDurationTests` table (src/time/time_test.go), plus a few more.
    #[test]
    fn parse_go_duration_matches_go_accepted_table() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("5s", 5 * SEC),
            ("30s", 30 * SEC),
            ("1478s", 1478 * SEC),
            ("-5s", -5 * SEC),
            ("+5s", 5 * SEC),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * SEC),
            ("5.6s", 5 * SEC + 600 * MS),
            ("5.s", 5 * SEC),
            (".5s", 500 * MS),
            ("1.0s", SEC),
            ("1.00s", SEC),
            ("1.004s", SEC + 4 * MS),
            ("1.0040s", SEC + 4 * MS),
            ("100.00100s", 100 * SEC + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12\u{b5}s", 12 * US),
            ("12\u{3bc}s", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * SEC),
            ("15m", 15 * MIN),
            ("16h", 16 * HOUR),
            ("3h30m", 3 * HOUR + 30 * MIN),
            ("10.5s4m", 4 * MIN + 10 * SEC + 500 * MS),
            ("-2m3.4s", -(2 * MIN + 3 * SEC + 400 * MS)),
            (
                "1h2m3s4ms5us6ns",
                HOUR + 2 * MIN + 3 * SEC + 4 * MS + 5 * US + 6 * NS,
            ),
            ("39h9m14.425s", 39 * HOUR + 9 * MIN + 14 * SEC + 425 * MS),
            ("52763797000ns", 52_763_797_000 * NS),
            ("0.3333333333333333333h", 20 * MIN),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX as i128),
            ("9223372036854775.807us", i64::MAX as i128),
            ("9223372036s854ms775us807ns", i64::MAX as i128),
            ("-9223372036854775808ns", i64::MIN as i128),
            ("-9223372036854775.808us", i64::MIN as i128),
            ("-9223372036s854ms775us808ns", i64::MIN as i128),
            ("-2562047h47m16.854775808s", i64::MIN as i128),
            ("0.100000000000000000000h", 6 * MIN),
            (
                "0.830103483285477580700h",
                49 * MIN + 48 * SEC + 372_539_827 * NS,
            ),
            // More: the brief's examples and zero spellings.
            ("1.5h", 90 * MIN),
            ("1h30m", 90 * MIN),
            ("90s", 90 * SEC),
            ("5m", 5 * MIN),
            ("1.s", SEC),
            ("0s", 0),
            ("-0s", 0),
            ("0.0h", 0),
            ("00s", 0),
            ("1m1m", 2 * MIN),
            ("1s1.5s", 2 * SEC + 500 * MS),
        ];
        for &(input, expected) in cases {
            match parse_go_duration(input) {
                Ok(d) => assert_eq!(signed_nanos(d), expected, "{input:?}"),
                Err(e) => panic!("{input:?} should parse: {e}"),
            }
        }
    }

    #[test]
    fn parse_go_duration_matches_go_refused_table() {
        let cases = [
            "",
            "3",
            "-",
            "+",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "\u{ff}ff",
            "hello \u{ff}ff world",
            "\u{FFFD}",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "9223372036854776us",
            "3000000h",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            // More.
            "00",
            "-00",
            "1",
            "1h30",
            "1 s",
            " 1s",
            "1s ",
            "1S",
            "1H",
            "1sec",
            "--1s",
            "+-1s",
            "1.5.5s",
            "1..5s",
            "1e3s",
            "0x10s",
            "1_000s",
            "1µ",
            "1\u{3bc}",
            "1s-1s",
            "99999999999999999999999ns",
            "2562048h",
            "-9223372036854775808ns9223372036854775808ns",
            "9223372036854775807ns1ns",
            "é",
            "1é",
            "1sé",
        ];
        for input in cases {
            assert_eq!(
                parse_go_duration(input),
                Err(r#"must be a duration such as "5m", "90s" or "1h30m""#.to_string()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn parse_go_duration_sign_and_zero() {
        let zero = GoDuration {
            negative: false,
            magnitude: Duration::ZERO,
        };
        for input in ["0", "-0", "+0", "0s", "-0s", "-0.0h"] {
            assert_eq!(parse_go_duration(input), Ok(zero), "{input:?}");
        }
        assert_eq!(
            parse_go_duration("-1.5s"),
            Ok(GoDuration {
                negative: true,
                magnitude: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            parse_go_duration("-9223372036854775808ns").map(|d| d.magnitude),
            Ok(Duration::from_nanos(1 << 63))
        );
    }

    #[test]
    fn go_duration_as_std() {
        let positive = GoDuration {
            negative: false,
            magnitude: Duration::from_secs(3),
        };
        assert_eq!(positive.as_std(), Some(Duration::from_secs(3)));
        let negative = GoDuration {
            negative: true,
            magnitude: Duration::from_secs(3),
        };
        assert_eq!(negative.as_std(), None);
        assert_eq!(
            parse_go_duration("0").map(|d| d.as_std()),
            Ok(Some(Duration::ZERO))
        );
        assert_eq!(
            parse_go_duration("1h").map(|d| d.as_std()),
            Ok(Some(Duration::from_secs(3600)))
        );
        assert_eq!(parse_go_duration("-1h").map(|d| d.as_std()), Ok(None));
    }

    #[test]
    fn positive_duration_accepts_positive_values() {
        assert_eq!(positive_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(positive_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(positive_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(positive_duration("+1ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            positive_duration("9223372036854775807ns"),
            Ok(Duration::from_nanos(i64::MAX as u64))
        );
    }

    #[test]
    fn positive_duration_refuses_zero_negative_and_malformed_values() {
        for input in [
            "0",
            "0s",
            "-0",
            "+0",
            "0.0h",
            "-1s",
            "-1ns",
            "-9223372036854775808ns",
        ] {
            assert_eq!(
                positive_duration(input),
                Err("must be greater than zero".to_string()),
                "{input:?}"
            );
        }
        for input in ["", "10", "ten seconds", "1d", "-"] {
            assert_eq!(
                positive_duration(input),
                Err(DURATION_MSG.to_string()),
                "{input:?}"
            );
        }
    }

    // ---------------------------------------------------------------- no panics

    /// A deterministic xorshift generator, so the fuzz test needs no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn check_everything(value: &str) {
        let _ = dns1123_subdomain(value);
        let _ = ip_or_dns_name(value);
        let _ = qualified_name(value);
        let _ = label_value(value);
        let _ = image_reference(value);
        let _ = absolute_path(value);
        let _ = parse_go_duration(value);
        let _ = positive_duration(value);
        let mut annotations = BTreeMap::new();
        annotations.insert(value.to_string(), value.to_string());
        let _ = annotations_size(&annotations);
    }

    #[test]
    fn no_function_panics_on_random_input() {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "0",
            "9",
            "-",
            "_",
            ".",
            "..",
            "/",
            ":",
            "@",
            "[",
            "]",
            "+",
            " ",
            "\0",
            "é",
            "µ",
            "μ",
            "€",
            "😀",
            "\u{FFFD}",
            "\u{85}",
            "s",
            "ms",
            "h",
            "ns",
            "us",
            "sha256",
            SHA256,
            "localhost",
            "docker.io",
            "::1",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let len = (rng.next() % 12) as usize;
            let mut value = String::new();
            for _ in 0..len {
                value.push_str(PIECES[(rng.next() % PIECES.len() as u64) as usize]);
            }
            check_everything(&value);
        }
    }

    #[test]
    fn no_function_panics_on_multibyte_input() {
        let samples = [
            "é",
            "😀",
            "µs",
            "1µs",
            "1μ",
            "é.com",
            "a/é",
            "é/a",
            "éé/ü:é@é",
            "reg.io/app:é",
            "app@sha256:é",
            "[é]:1/a",
            "[::1]é/a",
            "a:😀",
            "😀/😀",
            "/😀",
            "1.😀",
            ".😀s",
            "Ü/app",
            "İ/app",
        ];
        for sample in samples {
            // Every prefix and suffix cut at a character boundary.
            for (i, _) in sample
                .char_indices()
                .chain(std::iter::once((sample.len(), ' ')))
            {
                check_everything(&sample[..i]);
                check_everything(&sample[i..]);
            }
        }
        for v in ["é", "😀", "a😀", "😀.com"] {
            err(dns1123_subdomain(v), v);
            err(ip_or_dns_name(v), v);
            err(qualified_name(v), v);
            err(label_value(v), v);
            err(image_reference(v), v);
            assert!(parse_go_duration(v).is_err(), "{v:?}");
        }
        // Long multi-byte strings around the length limits.
        for n in [62, 63, 64, 126, 127, 128, 252, 253, 254, 255, 256] {
            check_everything(&"é".repeat(n));
            check_everything(&format!("a{}", "é".repeat(n)));
        }
    }
}
