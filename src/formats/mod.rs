//! Pure checks of the string formats Kubernetes and Docker use (DNS names, label keys and values,
//! annotation sizes, image references, paths and Go durations), for the admission webhooks.
//!
//! Every check returns `Err` with a short human-readable reason that names neither the field nor
//! the value: the caller adds both. The Kubernetes checks follow
//! `k8s.io/apimachinery/pkg/util/validation` (rules and wording); the image reference check
//! follows `github.com/distribution/reference` as `docker pull` uses it; the duration parser
//! follows Go's `time.ParseDuration`. No function panics, whatever the input.
//!
//! One module per kind of string: Kubernetes names, labels and annotations (`names`), image
//! references (`image`), paths (`paths`) and Go durations (`duration`); their checks are
//! re-exported here.

mod duration;
mod image;
mod names;
mod paths;

pub use duration::{GoDuration, parse_go_duration, positive_duration};
pub use image::image_reference;
pub use names::{
    ANNOTATIONS_TOTAL_SIZE_LIMIT, annotations_size, dns1123_subdomain, ip_or_dns_name, label_value,
    qualified_name,
};
pub use paths::absolute_path;

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

#[cfg(test)]
mod test_helpers {
    pub(super) const SHA256: &str =
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    pub(super) fn ok(result: Result<(), String>, value: &str) {
        assert_eq!(result, Ok(()), "{value:?} should be accepted");
    }

    pub(super) fn err(result: Result<(), String>, value: &str) -> String {
        match result {
            Ok(()) => panic!("{value:?} should be refused"),
            Err(msg) => {
                assert!(!msg.is_empty(), "{value:?}: empty message");
                msg
            }
        }
    }

    /// `n` labels of `label_len` copies of `c`, joined with dots.
    pub(super) fn dotted(c: char, label_len: usize, n: usize) -> String {
        vec![c.to_string().repeat(label_len); n].join(".")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::test_helpers::*;
    use super::*;

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
