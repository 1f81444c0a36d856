//! Kubernetes names, label keys and values, hosts and annotation sizes, as
//! `k8s.io/apimachinery/pkg/util/validation` checks them (rules and wording).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{is_lower_alnum, join_errors, max_len_error, regex_error};

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

/// The most bytes (keys plus values) a Kubernetes object's annotations may hold in total.
pub const ANNOTATIONS_TOTAL_SIZE_LIMIT: usize = 256 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::test_helpers::*;

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
}
