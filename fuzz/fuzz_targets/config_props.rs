//! The `config_parse` fuzz target's properties, shared with `tests/fuzz_regressions.rs`, which
//! replays every input in `fuzz/regressions/config_parse/` through [`check`] on stable Rust.
//! Arbitrary bytes through the config parser. Properties:
//! 1. never panics;
//! 2. a parse error's Display never echoes a base64 `secret:` value of the input;
//! 3. a config that parses renders (`render_yaml`) to YAML that parses back and renders the same
//!    (edit.rs: "what it writes always parses back to the same config"); lint/resolve don't panic.

use std::path::Path;

const PATH: &str = "fuzz-config.yaml";
/// Only values this long are checked, so that short common substrings cannot false-positive.
const MIN_SECRET_LEN: usize = 16;

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='
}

/// Values that textually follow a `secret:` key (YAML block, YAML flow or JSON form):
/// `secret` at a key position (line start after indentation / `- `, or after `{` / `,`),
/// optionally quoted, then `:`, then an optionally quoted or block (`|`, `>`) scalar whose
/// leading run of base64 characters is the value.
pub(crate) fn secret_values(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(off) = text[from..].find("secret") {
        let start = from + off;
        from = start + "secret".len();
        // Key position: skip one opening quote, then only blanks / `-` back to a line start, `{` or `,`.
        let mut i = start;
        if i > 0 && matches!(bytes[i - 1], b'"' | b'\'') {
            i -= 1;
        }
        let key_pos = i;
        let mut at_key = true;
        while i > 0 {
            match bytes[i - 1] {
                b' ' | b'\t' | b'-' => i -= 1,
                b'\n' | b'\r' | b'{' | b',' => break,
                _ => {
                    at_key = false;
                    break;
                }
            }
        }
        if !at_key {
            continue;
        }
        // `secret` [quote] [blanks] `:` [blanks] [quote | block indicator + newline + indent].
        let mut j = from;
        if j < bytes.len() && matches!(bytes[j], b'"' | b'\'') {
            j += 1;
        }
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b':' {
            continue;
        }
        j += 1;
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
            j += 1;
        }
        if j < bytes.len() && matches!(bytes[j], b'"' | b'\'') {
            j += 1;
        } else if j < bytes.len() && matches!(bytes[j], b'|' | b'>') {
            // Block scalar: its content lines are indented deeper than the `secret` key.
            let line_start = text[..start].rfind(['\n', '\r']).map_or(0, |n| n + 1);
            let key_col = key_pos - line_start;
            j += 1;
            while j < bytes.len() && matches!(bytes[j], b'+' | b'-' | b'0'..=b'9' | b' ' | b'\t') {
                j += 1;
            }
            let mut content = None;
            while j < bytes.len() && matches!(bytes[j], b'\n' | b'\r') {
                j += 1;
                let indent = bytes[j..].iter().take_while(|b| **b == b' ').count();
                j += indent;
                if j < bytes.len() && !matches!(bytes[j], b'\n' | b'\r') {
                    content = (indent > key_col).then_some(j);
                    break;
                }
            }
            match content {
                Some(c) => j = c,
                None => continue,
            }
        }
        let end = j + bytes[j..].iter().take_while(|b| is_b64(**b)).count();
        if end - j >= MIN_SECRET_LEN {
            out.push(&text[j..end]);
        }
    }
    out
}

/// The same length and base64 alphabet, every character different (rot13 / +5 / swap).
fn substitute(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' => (b'A' + (b - b'A' + 13) % 26) as char,
            b'a'..=b'z' => (b'a' + (b - b'a' + 13) % 26) as char,
            b'0'..=b'9' => (b'0' + (b - b'0' + 5) % 10) as char,
            b'+' => '/',
            b'/' => '+',
            other => other as char,
        })
        .collect()
}

/// What src/config/parse.rs `redact` removes: the text after `secret` + `:` up to the next
/// newline, `,` or `}` (a copy of `secret_like_values`, to recognise a known finding).
fn redacted_by_src(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("secret") {
        rest = &rest[i + "secret".len()..];
        let after = rest.trim_start_matches(['"', '\'']).trim_start();
        if let Some(value) = after.strip_prefix(':') {
            let value = value.trim_start();
            let end = value.find(['\n', ',', '}', '\r']).unwrap_or(value.len());
            let v = value[..end].trim().trim_matches(['"', '\'']);
            if !v.is_empty() {
                found.push(v);
            }
        }
    }
    found
}

/// KNOWN-1 (see README): `redact` only removes what its textual scan extracts after `secret:`
/// (up to the next newline, `,` or `}`, quotes trimmed, 4+ chars). When the value is written any
/// other way it is not removed, and an `unknown field` error that quotes a (multi-line or
/// colon-joined) field name echoes it: `secret:KEY:`, `"secret":"KEY":"x"`, `{secret:|\n  KEY}`.
fn is_known_1(text: &str, v: &str) -> bool {
    !redacted_by_src(text)
        .iter()
        .any(|s| s.len() >= 4 && *s == v)
}

/// KNOWN-2 (see README): `redact` is applied to decoder messages only. The errors raised after
/// decoding quote user scalars verbatim: `unsupported apiVersion/kind {v}/{k}` (`kind:
/// z,secret:KEY`) and the validation errors (`resources[0].resources[0]: Invalid value:
/// "secret:KEY,"`).
fn is_known_2(message: &str) -> bool {
    !message.contains(": strict decoding error")
}

/// With ATREST_FUZZ_SKIP_KNOWN set, echoes of the known classes are not reported, so that a run
/// can go on looking for other ones.
fn is_known(text: &str, message: &str, v: &str) -> bool {
    std::env::var_os("ATREST_FUZZ_SKIP_KNOWN").is_some()
        && (is_known_1(text, v) || is_known_2(message))
}

pub(crate) fn check_no_secret_echo(text: &str, message: &str) {
    for v in secret_values(text) {
        if !message.contains(v) || is_known(text, message, v) {
            continue;
        }
        // Only judge values that occur once in the input: else the error may quote another field.
        if text.matches(v).count() != 1 {
            continue;
        }
        // Is it the secret that is echoed, or a coincidence with the error's fixed wording?
        // Change the secret (same length and alphabet) and see whether `v` is still there.
        let changed = text.replacen(v, &substitute(v), 1);
        let still = match atrest::config::parse_str(Path::new(PATH), &changed) {
            Err(e) => e.to_string().contains(v),
            Ok(_) => false,
        };
        if still {
            continue;
        }
        panic!(
            "parse error echoes the secret value {v:?} from the input\n--- error ---\n{message}\n--- input ---\n{text}"
        );
    }
}

/// One fuzz input: panics when a property does not hold.
pub(crate) fn check(data: &[u8]) {
    match atrest::config::parse_bytes(Path::new(PATH), data) {
        Err(e) => {
            let message = e.to_string();
            if let Ok(text) = std::str::from_utf8(data) {
                check_no_secret_echo(text, &message);
            }
        }
        Ok(config) => {
            std::hint::black_box(atrest::config::lint(&config));
            for gr in config.named_resources() {
                std::hint::black_box(config.resolve(&gr));
            }
            std::hint::black_box(config.resolve(&atrest::GroupResource::parse("secrets")));
            let rendered = atrest::config::render_yaml(&config);
            let again = match atrest::config::parse_str(Path::new(PATH), &rendered) {
                Ok(c) => c,
                Err(e) => panic!(
                    "render_yaml output does not parse back: {e}\n--- rendered ---\n{}",
                    &*rendered
                ),
            };
            let rerendered = atrest::config::render_yaml(&again);
            assert!(
                *rendered == *rerendered,
                "render_yaml is not stable across a parse round trip\n--- first ---\n{}\n--- second ---\n{}",
                &*rendered,
                &*rerendered
            );
        }
    }
}
