//! Content decoders: base64, gzip, and RFC 2397 `data:` URLs. Errors are short reasons; the
//! caller names the file.

use std::io::Read;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use flate2::read::MultiGzDecoder;

/// The most bytes a gzip payload may expand to (guards against decompression bombs).
pub(crate) const MAX_DECOMPRESSED: u64 = 64 * 1024 * 1024;

/// Standard-alphabet base64 that accepts missing padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes standard base64, ignoring ASCII whitespace (line breaks in YAML block scalars).
pub(crate) fn base64(text: &[u8]) -> Result<Vec<u8>, String> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    BASE64
        .decode(&compact)
        .or_else(|_| general_purpose::STANDARD.decode(&compact))
        .map_err(|e| format!("invalid base64: {e}"))
}

/// Decompresses gzip data (all members), refusing output above [`MAX_DECOMPRESSED`] bytes.
pub(crate) fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if data.is_empty() {
        // What Python's gzip.decompress (cloud-init) gives for no data.
        return Ok(out);
    }
    MultiGzDecoder::new(data)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("invalid gzip data: {e}"))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(format!(
            "gzip data expands to more than {MAX_DECOMPRESSED} bytes"
        ));
    }
    Ok(out)
}

/// Decodes an RFC 2397 `data:[<mediatype>][;base64],<data>` URL: base64 when the media type
/// ends with `;base64`, otherwise percent-decoded.
pub(crate) fn data_url(url: &str) -> Result<Vec<u8>, String> {
    let url = url.trim();
    let rest = url
        .get(..5)
        .filter(|scheme| scheme.eq_ignore_ascii_case("data:"))
        .and_then(|_| url.get(5..))
        .ok_or_else(|| {
            let shown: String = url.chars().take(40).collect();
            format!("only data: URLs are supported, found {shown:?}")
        })?;
    let (header, data) = rest
        .split_once(',')
        .ok_or_else(|| "data: URL has no ',' before its data".to_owned())?;
    let is_base64 = header
        .rsplit_once(';')
        .is_some_and(|(_, last)| last.trim().eq_ignore_ascii_case("base64"));
    let bytes = percent_decode(data)?;
    if is_base64 { base64(&bytes) } else { Ok(bytes) }
}

/// Decodes `%XX` escapes; every other byte is kept as is.
pub(crate) fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("write to memory");
        encoder.finish().expect("finish in memory")
    }

    #[test]
    fn base64_ignores_whitespace_and_padding() {
        assert_eq!(base64(b"aGVs\nbG8=\n").expect("valid"), b"hello");
        assert_eq!(base64(b"aGVsbG8").expect("valid"), b"hello");
        assert!(base64(b"!!!").unwrap_err().contains("invalid base64"));
    }

    #[test]
    fn gunzip_round_trip_and_garbage() {
        assert_eq!(gunzip(&gzip(b"hi there")).expect("valid"), b"hi there");
        assert!(gunzip(b"not gzip").unwrap_err().contains("invalid gzip"));
        assert!(gunzip(b"").is_ok());
    }

    #[test]
    fn data_urls() {
        assert_eq!(data_url("data:,foo%20bar%0A").expect("valid"), b"foo bar\n");
        assert_eq!(
            data_url("data:text/plain;charset=utf-8;base64,aGVsbG8=").expect("valid"),
            b"hello"
        );
        assert_eq!(data_url("DATA:;base64,aGk=").expect("valid"), b"hi");
        assert_eq!(data_url("data:,").expect("valid"), b"");
        assert!(
            data_url("https://example.com/x")
                .unwrap_err()
                .contains("only data:")
        );
        assert!(data_url("data:foo").unwrap_err().contains("no ','"));
        assert!(data_url("data:,%zz").unwrap_err().contains("percent"));
        assert!(data_url("data:,%").is_err());
        assert!(data_url("dätä").is_err());
        assert!(data_url("").is_err());
    }
}
