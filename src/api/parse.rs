//! Parsing the provider's objects from JSON or YAML with errors that name the field path
//! (`spec.failureDomains[1].controlPlane: invalid type: ...`), never a panic.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A document that does not fit the type it was parsed as.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not valid YAML (or JSON).
    #[error("not valid YAML: {0}")]
    Syntax(String),
    /// A field has the wrong type or shape; `path` is where, `.`-separated.
    #[error("{path}: {message}")]
    Field {
        /// The path of the offending field, for example `spec.extraMounts[0].readOnly`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Parses a JSON value as `T`, naming the field path on error.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| ParseError::Field {
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

/// Parses one YAML (or JSON) document as `T`, naming the field path on error.
pub fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let value: Value =
        serde_saphyr::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
    from_value(value)
}
