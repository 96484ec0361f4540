use super::*;
use crate::codec::sensitive::content::{self, LITERALS, MAX_LITERAL};

#[test]
fn every_rule_is_listed_once() {
    let names: BTreeSet<_> = RULES.iter().map(|r| r.name).collect();
    assert_eq!(names.len(), RULES.len());
    assert_eq!(RULES[FIELD_NAME].name, "field-name");
    assert_eq!(RULES[BEARING].name, "secret-bearing-resource");
    let mut inside = Vec::new();
    for a in LITERALS.iter().map(|l| l.text) {
        assert!(a.len() <= MAX_LITERAL && a == a.to_lowercase());
        // Leftmost-first picks one literal per start: none may be another's prefix.
        assert_eq!(LITERALS.iter().filter(|b| b.text.starts_with(a)).count(), 1);
        for b in LITERALS.iter().map(|l| l.text) {
            if (1..a.len()).any(|i| b.starts_with(&a[i..]) || a[i..].starts_with(b)) {
                inside.push((a, b));
            }
        }
    }
    // The overlaps the LITERALS doc comment argues are harmless, and no other.
    let argued = [
        ("key", "eyj"),
        ("pass", "secret"),
        ("secret", "token"),
        ("akia", "akia"),
        ("akia", "asia"),
        ("asia", "akia"),
        ("asia", "asia"),
        ("xox", "xox"),
    ];
    assert_eq!(inside, argued);
}

#[test]
fn teddy_and_the_automaton_agree() {
    let (teddy, automaton) = (content::Search::new(true), content::Search::new(false));
    let mut values: Vec<Vec<u8>> = cases().into_iter().map(|c| c.value).collect();
    values.push(b"Asia/Tokyo asia AKIA0123 https://host:1/x client-KEY-data api_key".to_vec());
    values.push(
        format!(
            "{}PRIVATE KEY-----{}",
            " ".repeat(1015),
            " token: x".repeat(200)
        )
        .into_bytes(),
    );
    for v in &values {
        let t = content::triggers_with(&teddy, v);
        assert_eq!(t, content::triggers_with(&automaton, v));
        assert_ne!(t, 0);
    }
}

#[test]
fn the_prefilter_sees_every_secret_name() {
    let words = [
        "pass word",
        "passwd",
        "token",
        "secret",
        "api key",
        "private key",
        "secret key",
        "access key",
        "client secret",
        "credentials",
        "auth token",
        "bearer token",
        "secret access key",
        "access token",
        "refresh token",
        "api token",
    ];
    let mut seen = 0;
    for w in words {
        for sep in ["", "_", "-", "."] {
            let parts: Vec<String> = w.split(' ').map(str::to_string).collect();
            let camel: Vec<String> = parts
                .iter()
                .enumerate()
                .map(|(i, p)| match i {
                    0 => p.clone(),
                    _ => p[..1].to_uppercase() + &p[1..],
                })
                .collect();
            for name in [
                parts.join(sep),
                parts.join(sep).to_uppercase(),
                camel.join(sep),
            ] {
                for name in [
                    name.clone(),
                    format!("db_{name}"),
                    format!("X-Service-{name}"),
                ] {
                    if secret_name(name.as_bytes()) {
                        seen += 1;
                        assert_ne!(triggers(name.as_bytes()) & content::NAMES, 0, "{name}");
                    }
                }
            }
        }
    }
    assert!(seen > 400, "{seen}");
}

#[test]
fn kubeconfig_needs_a_value_after_the_name() {
    let kc = |s: &str| triggers(s.as_bytes()) & content::bit(KUBECONFIG) != 0;
    assert!(kc("users:\n- user:\n    token: abc"));
    assert!(kc(r#"{"user": {"password" : "abc"}}"#));
    assert!(kc(r#"{\"token\":\"abc\"}"#));
    assert!(!kc(r#"{"password": {"name": "db", "key": "pw"}}"#));
    assert!(!kc(
        r#"{"token": "", "tokenUrl": "https://x", "password_file": "/p"}"#
    ));
}
