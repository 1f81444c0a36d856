//! clusterctl's variable substitution (drone/envsubst, as `clusterctl init` and `clusterctl
//! generate cluster` apply it), so tests render the components and templates as clusterctl does:
//! only `${...}` is a variable (`$VAR` stays as written), `$$` is a literal `$`, and
//! `${VAR:=default}`, `${VAR:-default}` (default when unset or empty), `${VAR=default}`,
//! `${VAR-default}` (default when unset) give defaults, kept verbatim (`${X:=""}` renders `""`).

use std::collections::{BTreeSet, HashMap};

/// One `${...}` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The variable's name.
    pub name: String,
    /// Its default, as written, if it has one.
    pub default: Option<String>,
    /// Whether the default also applies when the value is empty (`:=`, `:-`).
    default_if_empty: bool,
}

/// A piece of the text: literal, or a variable reference.
enum Piece<'a> {
    Text(&'a str),
    Var(Variable),
}

/// Splits `text` into literal text and `${...}` references. An unclosed `${` stays literal.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push(Piece::Text(&rest[..at]));
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push(Piece::Text("$"));
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            out.push(Piece::Var(parse(&body[..end])));
            rest = &body[end + 1..];
        } else {
            out.push(Piece::Text("$"));
            rest = after;
        }
    }
    out.push(Piece::Text(rest));
    out
}

/// `NAME`, `NAME:=default`, `NAME:-default`, `NAME=default` or `NAME-default` (spaces around
/// the name tolerated, as in clusterctl).
fn parse(body: &str) -> Variable {
    let body = body.trim_start();
    let end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, rest) = body.split_at(end);
    let rest = rest.trim_start();
    let (default, default_if_empty) =
        if let Some(d) = rest.strip_prefix(":=").or_else(|| rest.strip_prefix(":-")) {
            (Some(d.to_owned()), true)
        } else if let Some(d) = rest.strip_prefix('=').or_else(|| rest.strip_prefix('-')) {
            (Some(d.to_owned()), false)
        } else {
            (None, false)
        };
    Variable {
        name: name.to_owned(),
        default,
        default_if_empty,
    }
}

/// Every `${...}` reference in `text`, in order (repeats included).
pub fn variables(text: &str) -> Vec<Variable> {
    pieces(text)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
        .collect()
}

/// `text` with every variable replaced by its value in `values`, else its default. Fails as
/// clusterctl does, naming every variable that has neither.
pub fn substitute(text: &str, values: &HashMap<&str, &str>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut missing = BTreeSet::new();
    for piece in pieces(text) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(v) => match (values.get(v.name.as_str()), &v.default) {
                (Some(value), Some(default)) if value.is_empty() && v.default_if_empty => {
                    out.push_str(default)
                }
                (Some(value), _) => out.push_str(value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    missing.insert(v.name);
                }
            },
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        let names: Vec<String> = missing.into_iter().collect();
        Err(format!(
            "value for variables [{}] is not set",
            names.join(", ")
        ))
    }
}
