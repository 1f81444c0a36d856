//! Paths, as the API's mount fields take them.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::test_helpers::*;

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
}
