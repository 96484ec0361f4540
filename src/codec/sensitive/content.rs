//! The content rules and the literal prefilter in front of them: which rules a byte string may
//! match is decided by one SIMD literal search, and only those rules' regexes run.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind, packed};
use regex::bytes::{Regex, RegexBuilder};

use super::{
    AWS, AZURE, CONTENT_MASK, CONTENT_RULES, FIELD_NAME, GCP, GITHUB, GITLAB, JWT, KUBECONFIG, PEM,
    SLACK, URL,
};

/// One literal of the prefilter and what it calls for: `triggers`, or what `check` says after
/// looking at the original bytes around `start..end`.
pub(super) struct Literal {
    pub(super) text: &'static str,
    triggers: u32,
    check: Option<Check>,
}

/// The rules a literal found at `start..end` of the haystack calls for, from its context.
type Check = fn(&[u8], usize, usize) -> u32;

pub(super) const fn bit(rule: usize) -> u32 {
    1 << rule
}

pub(super) const NAMES: u32 = bit(FIELD_NAME);

/// Every match of every rule contains one of these (ASCII case aside). Few and distinct, so
/// the SIMD search rarely stops on ordinary text; the checks sort out the rest. The search
/// reports non-overlapping matches; a literal that can start inside another's match (`pass` →
/// `secret`, `secret` → `token`, `key` → `eyJ`, `akia`/`asia` → `akia`/`asia`, `xox` → `xox`)
/// then either adds nothing the outer one does not, or cannot start a word, as a token must.
pub(super) const LITERALS: &[Literal] = &[
    checked("key", key),
    checked("pass", |h, _, e| match h.get(e..e + 4) {
        Some(w) if w.eq_ignore_ascii_case(b"word") => NAMES | kubeconfig_key(&h[e + 4..]),
        _ => NAMES,
    }),
    checked("token", |h, _, e| NAMES | kubeconfig_key(&h[e..])),
    lit("secret", NAMES),
    lit("credential", NAMES),
    checked("eyj", |h, s, _| {
        if h.get(s..s + 3) == Some(b"eyJ") {
            bit(JWT)
        } else {
            0
        }
    }),
    checked("akia", aws_key_id),
    checked("asia", aws_key_id),
    checked("://", url_userinfo),
    lit("ghp_", bit(GITHUB)),
    lit("gho_", bit(GITHUB)),
    lit("ghu_", bit(GITHUB)),
    lit("ghs_", bit(GITHUB)),
    lit("ghr_", bit(GITHUB)),
    lit("github_pat_", bit(GITHUB)),
    lit("glpat-", bit(GITLAB)),
    checked("xox", |h, _, e| match h.get(e..e + 2) {
        Some([b'b' | b'a' | b'p' | b'r' | b's', b'-']) => bit(SLACK),
        _ => 0,
    }),
];

const fn lit(text: &'static str, triggers: u32) -> Literal {
    Literal {
        text,
        triggers,
        check: None,
    }
}

const fn checked(text: &'static str, check: Check) -> Literal {
    Literal {
        text,
        triggers: 0,
        check: Some(check),
    }
}

fn ends_with_ci(hay: &[u8], suffix: &[u8]) -> bool {
    hay.len() >= suffix.len() && hay[hay.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn starts_with_ci(hay: &[u8], prefix: &[u8]) -> bool {
    hay.get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
}

/// `key` is common; what comes before it says which rules it can belong to: `apiKey`,
/// `private_key`, `ACCESS-KEY`, `secret.key` (names), `PRIVATE KEY-----` (PEM),
/// `client-key-data` (kubeconfig), `AccountKey`/`SharedAccessKey` (Azure),
/// `aws_secret_access_key` (AWS).
fn key(hay: &[u8], start: usize, end: usize) -> u32 {
    let (before, after) = (&hay[..start], &hay[end..]);
    let word = match before.last() {
        Some(b'_' | b'-' | b'.') => &before[..before.len() - 1],
        _ => before,
    };
    let mut found = 0;
    if [&b"api"[..], b"private", b"access", b"secret"]
        .iter()
        .any(|w| ends_with_ci(word, w))
    {
        found |= NAMES;
    }
    if ends_with_ci(before, b"private ") && after.starts_with(b"-----") {
        found |= bit(PEM);
    }
    if ends_with_ci(before, b"private_") {
        found |= bit(GCP);
    }
    if ends_with_ci(before, b"client-") && starts_with_ci(after, b"-data") {
        found |= bit(KUBECONFIG);
    }
    if ends_with_ci(before, b"account") || ends_with_ci(before, b"sharedaccess") {
        found |= bit(AZURE);
    }
    if ends_with_ci(before, b"aws_secret_access_") {
        found |= bit(AWS);
    }
    found
}

/// A kubeconfig's `token: x` or `password: x` (YAML or JSON, maybe escaped): after the name
/// a colon, then a value; not `tokenUrl=`, `password_file`, `"password": {"name": ...}`.
fn kubeconfig_key(after: &[u8]) -> u32 {
    // What the regex's `{Q}\s*` and `\s*{Q}` may skip.
    let skip = |b: &&u8| {
        matches!(
            b,
            b'"' | b'\\' | b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'
        )
    };
    let mut rest = after.iter().skip_while(skip);
    if rest.next() != Some(&b':') {
        return 0;
    }
    match rest.find(|b| !skip(b)) {
        Some(b'{' | b'}' | b'[' | b']' | b',' | b'\'') | None => 0,
        Some(_) => bit(KUBECONFIG),
    }
}

/// `AKIA`/`ASIA` in upper case, starting a word, with 16 upper-case alphanumerics after it:
/// the time zone `Asia/Tokyo` is common in ConfigMaps and must not cost a decode.
fn aws_key_id(hay: &[u8], start: usize, end: usize) -> u32 {
    let word_start = start == 0 || !hay[start - 1].is_ascii_alphanumeric();
    let id = word_start
        && hay[start..end].iter().all(u8::is_ascii_uppercase)
        && hay.get(end..end + 16).is_some_and(|id| {
            id.iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        });
    if id { bit(AWS) } else { 0 }
}

/// `://` followed by a `user:password@` before the authority ends: most URLs have none.
fn url_userinfo(hay: &[u8], start: usize, end: usize) -> u32 {
    if &hay[start..end] != b"://" {
        return 0;
    }
    let mut colon = false;
    for &b in hay.iter().skip(end).take(256) {
        match b {
            b':' => colon = true,
            b'@' if colon => return bit(URL),
            b'@' | b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'\\' => return 0,
            _ if b <= b' ' => return 0,
            _ => {}
        }
    }
    0
}

pub(super) const MAX_LITERAL: usize = 11;

/// ASCII case folding by setting bit 5: letters fold exactly, a few other bytes collide with
/// printable ones (`_` with DEL), which can only add candidates the checks and regexes drop.
/// It vectorises to one OR per 16 bytes.
fn fold(b: u8) -> u8 {
    b | 0x20
}

/// The literal search: Teddy (SIMD) where the CPU has it, an automaton elsewhere.
pub(super) enum Search {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

static PREFILTER: LazyLock<Search> = LazyLock::new(|| Search::new(true));

impl Search {
    /// Teddy when `packed` and the CPU allows it; else the automaton.
    pub(super) fn new(packed: bool) -> Search {
        let folded = || {
            LITERALS
                .iter()
                .map(|l| l.text.bytes().map(fold).collect::<Vec<_>>())
        };
        let teddy = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(folded())
            .build()
            .filter(|_| packed);
        match teddy {
            Some(searcher) => Search::Packed(searcher),
            None => Search::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(folded())
                    .expect("the prefilter's literals are static"),
            ),
        }
    }

    /// Calls `f(literal, start, end)` for each non-overlapping leftmost-first match.
    fn each(&self, hay: &[u8], mut f: impl FnMut(usize, usize, usize)) {
        match self {
            Search::Packed(s) => s
                .find_iter(hay)
                .for_each(|m| f(m.pattern().as_usize(), m.start(), m.end())),
            Search::Automaton(a) => a
                .find_iter(hay)
                .for_each(|m| f(m.pattern().as_usize(), m.start(), m.end())),
        }
    }
}

/// Which rules may match `hay`: a bit per rule a literal found in it calls for.
pub(super) fn triggers(hay: &[u8]) -> u32 {
    triggers_with(&PREFILTER, hay)
}

/// [`triggers`] with a given search.
pub(super) fn triggers_with(search: &Search, hay: &[u8]) -> u32 {
    // The stack buffer is zeroed on every call: small for the many short strings of a walk.
    match hay.len() {
        0..3 => 0,
        3..=128 => triggers_in::<128>(search, hay),
        _ => triggers_in::<1024>(search, hay),
    }
}

/// Folds a stack chunk at a time so that the case-sensitive (SIMD) literal search applies.
fn triggers_in<const CHUNK: usize>(search: &Search, hay: &[u8]) -> u32 {
    let mut buf = [0u8; CHUNK];
    let mut found = 0;
    let mut offset = 0;
    while offset < hay.len() {
        let end = hay.len().min(offset + CHUNK);
        let chunk = &mut buf[..end - offset];
        for (d, &s) in chunk.iter_mut().zip(&hay[offset..end]) {
            *d = fold(s);
        }
        search.each(chunk, |i, start, end| {
            let lit = &LITERALS[i];
            found |= match lit.check {
                Some(check) => check(hay, offset + start, offset + end),
                None => lit.triggers,
            };
        });
        if end == hay.len() {
            break;
        }
        // Overlap so that a literal across the boundary is seen whole.
        offset = end - (MAX_LITERAL - 1);
    }
    found
}

/// One content rule: every regex must match (one match each for several); `verify` may refuse
/// a match of a single regex.
struct Matcher {
    all: Vec<Regex>,
    verify: Option<fn(&[u8]) -> bool>,
}

impl Matcher {
    fn count(&self, hay: &[u8]) -> u32 {
        match self.all.as_slice() {
            [one] => {
                let n = one
                    .find_iter(hay)
                    .filter(|m| self.verify.is_none_or(|v| v(m.as_bytes())))
                    .count();
                u32::try_from(n).unwrap_or(u32::MAX)
            }
            many => u32::from(many.iter().all(|r| r.is_match(hay))),
        }
    }
}

fn re(pattern: &str) -> Regex {
    // ASCII classes and word boundaries: Unicode ones would send the DFA back to a slower
    // engine on the first non-ASCII byte.
    RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .expect("the content rules' patterns are static")
}

/// An optional, possibly backslash-escaped, double quote: JSON keys, and JSON inside a JSON
/// string (the last-applied-configuration annotation).
const Q: &str = r#"(?:\\*")?"#;

static MATCHERS: LazyLock<[Matcher; CONTENT_RULES]> = LazyLock::new(|| {
    let one = |p: &str| Matcher {
        all: vec![re(p)],
        verify: None,
    };
    [
        one(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
        one(&format!(
            r#"(?s)\bclient-key-data{Q}\s*:\s*{Q}[A-Za-z0-9+/=]{{8}}|\busers{Q}\s*:.*?\buser{Q}\s*:.*?\b(?:token|password){Q}\s*:\s*{Q}[^\s"'\\{{}}\[\],]"#
        )),
        one(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
        one(&format!(
            r"\b(?:AKIA|ASIA)[A-Z0-9]{{16}}|(?i:aws_secret_access_key){Q}\s*[:=]\s*{Q}[A-Za-z0-9/+=]{{30,}}"
        )),
        Matcher {
            all: vec![
                re(&format!(r"{Q}type{Q}\s*:\s*{Q}service_account{Q}")),
                re(&format!(r"{Q}private_key{Q}\s*:\s*{Q}-----BEGIN")),
            ],
            verify: None,
        },
        one(r"(?i:AccountKey|SharedAccessKey)=[A-Za-z0-9+/]{20,}"),
        Matcher {
            all: vec![re(
                r#"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:"'<>\\]*:[^\s/?#@"'<>\\]+@[A-Za-z0-9\[_-]"#,
            )],
            verify: Some(real_password),
        },
        one(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})"),
        one(r"\bglpat-[A-Za-z0-9_-]{20,}"),
        one(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    ]
});

/// The password of a `scheme://user:password@host` match is not a placeholder (`${DB_PASS}`,
/// `$(PASS)`, `{{ .Values.pass }}`, `<password>`) or a mask (`****`).
fn real_password(url: &[u8]) -> bool {
    let Some(scheme_end) = url.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let authority = &url[scheme_end + 3..];
    let Some(at) = authority.iter().rposition(|&b| b == b'@') else {
        return false;
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.iter().position(|&b| b == b':') else {
        return false;
    };
    let password = &userinfo[colon + 1..];
    password
        .first()
        .is_some_and(|b| !matches!(b, b'$' | b'{' | b'<'))
        && !password.iter().all(|&b| b == b'*')
}

/// Per content rule, how many times it matches `hay`; rules `triggers` rules out are not run.
pub(super) fn content_counts(hay: &[u8], triggers: u32) -> [u32; CONTENT_RULES] {
    let mut counts = [0; CONTENT_RULES];
    if triggers & CONTENT_MASK == 0 {
        return counts;
    }
    for (rule, matcher) in MATCHERS.iter().enumerate() {
        if triggers & bit(rule) != 0 {
            counts[rule] = matcher.count(hay);
        }
    }
    counts
}
