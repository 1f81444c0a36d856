//! An ordered YAML value: like `serde_json::Value`, but mappings keep their key order (this
//! crate's `serde_json` has no `preserve_order`), so documents round-trip with their fields in
//! place.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Yaml {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for `i64`.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    String(String),
    /// A sequence.
    Seq(Vec<Yaml>),
    /// A mapping, in document order. Keys are scalars, kept as their text.
    Map(IndexMap<String, Yaml>),
}

impl Yaml {
    /// What kind of node this is, for error messages (`a mapping`, `a string`, ...).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Yaml::Null => "null",
            Yaml::Bool(_) => "a boolean",
            Yaml::Int(_) | Yaml::UInt(_) | Yaml::Float(_) => "a number",
            Yaml::String(_) => "a string",
            Yaml::Seq(_) => "a list",
            Yaml::Map(_) => "a mapping",
        }
    }

    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::String(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a scalar (numbers and booleans as YAML writes them); `None` for null,
    /// sequences and mappings.
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match self {
            Yaml::Bool(b) => Some(b.to_string()),
            Yaml::Int(i) => Some(i.to_string()),
            Yaml::UInt(u) => Some(u.to_string()),
            Yaml::Float(f) => Some(float_text(*f)),
            Yaml::String(s) => Some(s.clone()),
            Yaml::Null | Yaml::Seq(_) | Yaml::Map(_) => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(map) => map.get(key),
            _ => None,
        }
    }
}

/// A float as text: whole numbers without a fractional part (`640.0` -> `640`; the YAML
/// parser reads `0640` as a float).
pub(crate) fn float_text(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.0}")
    } else {
        f.to_string()
    }
}

impl Serialize for Yaml {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Yaml::Null => serializer.serialize_unit(),
            Yaml::Bool(b) => serializer.serialize_bool(*b),
            Yaml::Int(i) => serializer.serialize_i64(*i),
            Yaml::UInt(u) => serializer.serialize_u64(*u),
            Yaml::Float(f) => serializer.serialize_f64(*f),
            Yaml::String(s) => serializer.serialize_str(s),
            Yaml::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Yaml::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlVisitor)
    }
}

/// Builds a [`Yaml`] from whatever the deserializer finds.
struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Yaml, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Yaml::Int(i),
            Err(_) => Yaml::UInt(v),
        })
    }

    fn visit_i128<E>(self, v: i128) -> Result<Yaml, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Yaml::Int(i),
            Err(_) => Yaml::String(v.to_string()),
        })
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Yaml, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Ok(Yaml::String(v.to_string())),
        }
    }

    fn visit_f64<E>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::String(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Yaml, E> {
        Ok(Yaml::String(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_unit<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_none<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<Yaml>()? {
            items.push(item);
        }
        Ok(Yaml::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut entries = IndexMap::new();
        // Keys as written (`n:` is the key "n", not the YAML 1.1 boolean false).
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Yaml>()?;
            entries.insert(key, value);
        }
        Ok(Yaml::Map(entries))
    }
}

/// Parses one YAML document (as cloud-init's YAML 1.1 parser would, except for the octal
/// integers `0640`, which never matter to this module's callers). The error is the parser's
/// message without its source snippet: bootstrap data holds private keys, which must not end
/// up in conditions or logs.
pub(crate) fn parse_document(text: &str) -> Result<Yaml, String> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options::<Yaml>(text, options).map_err(|e| e.to_string())
}

/// Parses every document of a multi-document kubeadm YAML stream (empty documents are
/// skipped), reading scalars as kubeadm's YAML 1.1 parser does (`0640` is octal); errors as
/// in [`parse_document`].
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Yaml>, String> {
    let options = serde_saphyr::options! { with_snippet: false, legacy_octal_numbers: true };
    serde_saphyr::from_multiple_with_options::<Yaml>(text, options).map_err(|e| e.to_string())
}

/// Serializes one document (ends with a newline).
pub(crate) fn to_text(value: &Yaml) -> Result<String, String> {
    let mut text = serde_saphyr::to_string(value).map_err(|e| e.to_string())?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_types() {
        let doc: Yaml = serde_saphyr::from_str("z: 1\na: \"2\"\nm: {k: [true, ~, 1.5]}\nn: null\n")
            .expect("valid YAML");
        let Yaml::Map(map) = &doc else {
            panic!("not a mapping: {doc:?}")
        };
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(keys, ["z", "a", "m", "n"]);
        assert_eq!(doc.get("a"), Some(&Yaml::String("2".into())));
        let text = to_text(&doc).expect("serializes");
        let back: Yaml = serde_saphyr::from_str(&text).expect("round-trips");
        assert_eq!(back, doc);
        assert!(text.contains("\"n\": null"), "{text}");
    }

    #[test]
    fn scalar_keys_become_text() {
        let doc: Yaml = serde_saphyr::from_str("1: x\ntrue: y\nn: z\n").expect("valid YAML");
        let Yaml::Map(map) = doc else {
            panic!("not a mapping")
        };
        assert!(map.contains_key("1"));
        assert!(map.contains_key("true"));
        assert!(map.contains_key("n"));
    }

    #[test]
    fn float_text_drops_whole_fraction() {
        assert_eq!(float_text(640.0), "640");
        assert_eq!(float_text(1.5), "1.5");
    }
}
