//! POSIX `sh` helpers: quoting arguments, and rewriting `kubeadm init`/`kubeadm join`
//! commands inside a script so they run in a container (extra `--ignore-preflight-errors`,
//! and the [`STARTED_SENTINEL`] written first).
//!
//! The rewriting uses a small lexer that understands quotes, escapes, `$(...)`, backquotes,
//! comments, here-documents and the command separators, so a `kubeadm init` inside a quoted
//! string, a comment or a here-document is left alone.

use super::STARTED_SENTINEL;

/// The flag kubeadm gets; its value is the caller's.
const IGNORE_PREFLIGHT_FLAG: &str = "--ignore-preflight-errors";

/// Words that may start a command before the program itself (`if kubeadm init; then ...`).
const RESERVED_PREFIXES: &[&str] = &[
    "if", "then", "else", "elif", "do", "while", "until", "!", "{", "time",
];

/// Shell reserved words, which must be quoted to be taken as a program name.
const RESERVED_WORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "in", "case",
    "esac", "!", "{", "}", "time", "function", "select",
];

/// Programs that run their arguments as a command (`sudo kubeadm init`).
const WRAPPERS: &[&str] = &[
    "sudo", "env", "timeout", "nice", "nohup", "exec", "command", "time", "stdbuf", "ionice",
];

/// `s` in single quotes, safe for `sh` whatever it holds (`it's` -> `'it'\''s'`).
pub(crate) fn quote_always(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// `s` as one `sh` word: unchanged when it only holds characters `sh` takes literally,
/// otherwise single-quoted. `first` is true for the program name, where `=` (an assignment)
/// and reserved words (`if`, ...) also need quotes.
pub(crate) fn quote(s: &str, first: bool) -> String {
    let safe = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'.' | b'/' | b':' | b'@' | b'%' | b'+' | b','
                )
                || (b == b'=' && !first)
        })
        && !(first && RESERVED_WORDS.contains(&s));
    if safe { s.to_owned() } else { quote_always(s) }
}

/// An argument list as one `sh` command line, each argument quoted as needed.
pub(crate) fn join_args(args: &[String]) -> String {
    args.iter()
        .enumerate()
        .map(|(i, arg)| quote(arg, i == 0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text inserted before a `kubeadm init`/`join` command.
fn started_prefix() -> String {
    format!("mkdir -p /run/cluster-api && echo started > {STARTED_SENTINEL} && ")
}

/// Rewrites every `kubeadm init` / `kubeadm join` command in `script`: the
/// [`STARTED_SENTINEL`] is written first, and `--ignore-preflight-errors=<ignore>` is added
/// right after `init`/`join` unless the command already has an `--ignore-preflight-errors`.
/// `kubeadm init phase ...` commands are left alone (most phases reject the flag).
/// Returns the new script and whether anything changed.
pub(crate) fn rewrite_kubeadm(script: &str, ignore: &str) -> (String, bool) {
    let mut insertions: Vec<(usize, String)> = Vec::new();
    for words in lex(script) {
        if let Some((start, subcommand_end, has_flag)) = find_kubeadm(script, &words) {
            if !has_flag {
                insertions.push((subcommand_end, format!(" {IGNORE_PREFLIGHT_FLAG}={ignore}")));
            }
            insertions.push((start, started_prefix()));
        }
    }
    if insertions.is_empty() {
        return (script.to_owned(), false);
    }
    // Insert from the end so earlier offsets stay valid; offsets are at ASCII boundaries.
    insertions.sort_by_key(|insertion| std::cmp::Reverse(insertion.0));
    let mut out = script.to_owned();
    for (at, text) in insertions {
        if out.is_char_boundary(at) {
            out.insert_str(at, &text);
        }
    }
    (out, true)
}

/// In one simple command, finds `kubeadm init|join` run as the program (possibly after
/// reserved words, assignments or a wrapper such as `sudo`). Returns where the sentinel
/// prefix goes, where `init`/`join` ends, and whether the command already has the flag.
fn find_kubeadm(script: &str, words: &[Word]) -> Option<(usize, usize, bool)> {
    let raw = |w: &Word| script.get(w.start..w.end).unwrap_or("");
    let mut first = 0;
    while first < words.len() && RESERVED_PREFIXES.contains(&raw(&words[first])) {
        first += 1;
    }
    let start = words.get(first)?.start;
    let mut program = first;
    while program < words.len() && is_assignment(raw(&words[program])) {
        program += 1;
    }
    let args: Vec<&Word> = words[program..]
        .iter()
        .filter(|w| !w.redirect_target)
        .collect();
    let wrapped = args
        .first()
        .is_some_and(|w| WRAPPERS.contains(&basename(&w.text)));
    let position = args.iter().position(|w| basename(&w.text) == "kubeadm")?;
    if position != 0 && !wrapped {
        return None;
    }
    let subcommand = args.get(position + 1)?;
    if subcommand.text != "init" && subcommand.text != "join" {
        return None;
    }
    let rest = &args[position + 2..];
    if rest.first().is_some_and(|w| w.text == "phase") {
        return None;
    }
    let has_flag = rest
        .iter()
        .any(|w| w.text.starts_with(IGNORE_PREFLIGHT_FLAG));
    Some((start, subcommand.end, has_flag))
}

/// The last `/`-separated part of `path`.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `word` (as written) is a variable assignment such as `FOO=bar`.
fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// One word of a command.
#[derive(Debug)]
struct Word {
    /// Byte offset of its first character in the script.
    start: usize,
    /// Byte offset just past it.
    end: usize,
    /// Its text with quotes and escapes removed (substitutions kept as written).
    text: String,
    /// It is the target of a redirection (or a here-document delimiter), not an argument.
    redirect_target: bool,
}

/// Splits a script into simple commands (lists of words), at `;`, `&`, `|`, `(`, `)` and
/// newlines, skipping comments and here-document bodies.
fn lex(script: &str) -> Vec<Vec<Word>> {
    let bytes = script.as_bytes();
    let mut commands = Vec::new();
    let mut current: Vec<Word> = Vec::new();
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    let mut heredoc_next: Option<bool> = None;
    let mut redirect_next = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\r' => i += 1,
            b'\\' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'\n' => {
                commands.push(std::mem::take(&mut current));
                i += 1;
                if !heredocs.is_empty() {
                    i = skip_heredocs(bytes, i, &heredocs);
                    heredocs.clear();
                }
            }
            b';' | b'&' | b'|' | b'(' | b')' => {
                commands.push(std::mem::take(&mut current));
                i += 1;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'<' | b'>' => {
                let rest = &bytes[i..];
                if rest.starts_with(b"<<<") {
                    i += 3;
                    redirect_next = true;
                } else if rest.starts_with(b"<<-") {
                    i += 3;
                    heredoc_next = Some(true);
                } else if rest.starts_with(b"<<") {
                    i += 2;
                    heredoc_next = Some(false);
                } else {
                    i += 1;
                    if matches!(bytes.get(i), Some(b'>' | b'&' | b'|')) {
                        i += 1;
                    }
                    redirect_next = true;
                }
            }
            _ => {
                let (mut word, next) = lex_word(bytes, i);
                if let Some(strip_tabs) = heredoc_next.take() {
                    heredocs.push((word.text.clone(), strip_tabs));
                    word.redirect_target = true;
                } else if redirect_next {
                    word.redirect_target = true;
                }
                redirect_next = false;
                current.push(word);
                i = next.max(i + 1);
            }
        }
    }
    commands.push(current);
    commands.retain(|c| !c.is_empty());
    commands
}

/// Reads one word starting at `start`; returns it and the offset just past it.
fn lex_word(bytes: &[u8], start: usize) -> (Word, usize) {
    let mut text: Vec<u8> = Vec::new();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' => break,
            b'\\' => {
                match bytes.get(i + 1) {
                    Some(b'\n') => {}
                    Some(&c) => text.push(c),
                    None => {}
                }
                i += 2;
            }
            b'\'' => {
                let close = find_byte(bytes, i + 1, b'\'');
                text.extend_from_slice(&bytes[(i + 1).min(close)..close]);
                i = close + 1;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        match bytes[i + 1] {
                            b'\n' => {}
                            c @ (b'$' | b'`' | b'"' | b'\\') => text.push(c),
                            c => text.extend_from_slice(&[b'\\', c]),
                        }
                        i += 2;
                    } else if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'(') {
                        let end = skip_balanced(bytes, i + 1);
                        text.extend_from_slice(&bytes[i..end]);
                        i = end;
                    } else {
                        text.push(bytes[i]);
                        i += 1;
                    }
                }
                i += 1;
            }
            b'$' if bytes.get(i + 1) == Some(&b'(') => {
                let end = skip_balanced(bytes, i + 1);
                text.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                let end = (find_byte(bytes, i + 2, b'}') + 1).min(bytes.len());
                text.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            b'`' => {
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] != b'`' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(bytes.len());
                text.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    let end = i.min(bytes.len());
    let word = Word {
        start,
        end,
        text: String::from_utf8_lossy(&text).into_owned(),
        redirect_target: false,
    };
    (word, end)
}

/// The offset of the next `needle` at or after `from`, or the end of `bytes`.
fn find_byte(bytes: &[u8], from: usize, needle: u8) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| b == needle))
        .map_or(bytes.len(), |p| from + p)
}

/// Given the offset of a `(`, returns the offset just past its matching `)` (or the end),
/// skipping quoted text.
fn skip_balanced(bytes: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            b'\\' => i += 1,
            b'\'' => i = find_byte(bytes, i + 1, b'\''),
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// Skips the bodies of pending here-documents, which start at `from`; returns the offset of
/// the line after the last delimiter.
fn skip_heredocs(bytes: &[u8], from: usize, heredocs: &[(String, bool)]) -> usize {
    let mut i = from;
    for (delimiter, strip_tabs) in heredocs {
        while i < bytes.len() {
            let line_end = find_byte(bytes, i, b'\n');
            let mut line = &bytes[i..line_end];
            i = (line_end + 1).min(bytes.len());
            if *strip_tabs {
                while let [b'\t', rest @ ..] = line {
                    line = rest;
                }
            }
            if line.strip_suffix(b"\r").unwrap_or(line) == delimiter.as_bytes() {
                break;
            }
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFLIGHT: &str =
        "SystemVerification,Swap,FileContent--proc-sys-net-bridge-bridge-nf-call-iptables";

    fn rewrite(script: &str) -> String {
        rewrite_kubeadm(script, PREFLIGHT).0
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_always("/etc/it's here"), r"'/etc/it'\''s here'");
        assert_eq!(quote("--config=/x", false), "--config=/x");
        assert_eq!(quote("A=b", true), "'A=b'");
        assert_eq!(quote("", false), "''");
        assert_eq!(quote("a b", false), "'a b'");
        assert_eq!(quote("$HOME", false), "'$HOME'");
        assert_eq!(quote("if", true), "'if'");
        assert_eq!(quote("if", false), "if");
        assert_eq!(
            join_args(&["echo".into(), "it's".into(), "ok".into()]),
            r"echo 'it'\''s' ok"
        );
    }

    #[test]
    fn cabpk_init_command() {
        let out = rewrite(
            "kubeadm init --config /run/kubeadm/kubeadm.yaml  && echo success > /run/cluster-api/bootstrap-success.complete",
        );
        assert_eq!(
            out,
            format!(
                "mkdir -p /run/cluster-api && echo started > /run/cluster-api/capd.bootstrap.started && \
                 kubeadm init --ignore-preflight-errors={PREFLIGHT} --config /run/kubeadm/kubeadm.yaml  && \
                 echo success > /run/cluster-api/bootstrap-success.complete"
            )
        );
    }

    #[test]
    fn join_with_path_wrapper_and_assignment() {
        let out = rewrite("FOO=1 sudo -E /usr/bin/kubeadm join --config x");
        assert!(
            out.starts_with("mkdir -p /run/cluster-api && echo started > "),
            "{out}"
        );
        assert!(out.contains(&format!(
            "&& FOO=1 sudo -E /usr/bin/kubeadm join --ignore-preflight-errors={PREFLIGHT} --config x"
        )));
    }

    #[test]
    fn existing_flag_kept_but_sentinel_added() {
        let out = rewrite("kubeadm join --ignore-preflight-errors=all --config x");
        assert!(out.ends_with("&& kubeadm join --ignore-preflight-errors=all --config x"));
        assert_eq!(out.matches(IGNORE_PREFLIGHT_FLAG).count(), 1);
        assert!(out.contains(STARTED_SENTINEL));
    }

    #[test]
    fn leaves_other_commands_alone() {
        for script in [
            "echo kubeadm init",
            "echo 'kubeadm init' # kubeadm init",
            "kubeadm init phase certs all",
            "kubeadm version",
            "cat <<EOF > /x\nkubeadm init\nEOF\n",
            "cat <<-'EOF' > /x\n\tkubeadm join\n\tEOF",
            "",
        ] {
            let (out, changed) = rewrite_kubeadm(script, "all");
            assert!(!changed, "{script:?} -> {out:?}");
            assert_eq!(out, script);
        }
    }

    #[test]
    fn after_reserved_words_and_heredoc() {
        let script =
            "cat <<EOF > /etc/m.conf\noverlay\nEOF\nif kubeadm init; then\n  echo ok\nfi\n";
        let out = rewrite_kubeadm(script, "all").0;
        assert_eq!(
            out,
            format!(
                "cat <<EOF > /etc/m.conf\noverlay\nEOF\nif {}kubeadm init --ignore-preflight-errors=all; then\n  echo ok\nfi\n",
                started_prefix()
            )
        );
    }

    #[test]
    fn every_occurrence_and_utf8() {
        let script = "echo é; kubeadm join a\nkubeadm init b # ünïcode";
        let out = rewrite_kubeadm(script, "all").0;
        assert_eq!(out.matches("--ignore-preflight-errors=all").count(), 2);
        assert_eq!(out.matches(STARTED_SENTINEL).count(), 2);
        assert!(out.contains("echo é; mkdir"));
    }

    #[test]
    fn lexer_survives_garbage() {
        for script in [
            "'unterminated",
            "\"unterminated \\",
            "$(",
            "${",
            "`",
            "<<",
            "kubeadm init <<",
            "\\",
            ">>>",
            "kubeadm",
            "kubeadm init\"",
            "(((kubeadm join)))",
        ] {
            let _ = rewrite_kubeadm(script, "all");
        }
        let out = rewrite_kubeadm("(((kubeadm join)))", "all").0;
        assert!(
            out.contains("join --ignore-preflight-errors=all)))"),
            "{out}"
        );
    }
}
