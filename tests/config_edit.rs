//! The rotation edits, on plain configs: each step's provider order, and that what atrest writes
//! parses back to the same config.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use atrest::GroupResource;
use atrest::config::{
    EditError, EncryptionConfig, RotationTarget, add_read_key, parse_str, promote, remove,
    render_yaml, rules_for,
};
use atrest::keys::Key;
use atrest::model::KeyLabel;
use atrest::model::KeyProvider;

fn cfg(providers: &str) -> EncryptionConfig {
    let k = "MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0dXY=";
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, configmaps]\n  providers: {}\n- resources: [events]\n  providers: [{{identity: {{}}}}]\n",
        providers.replace("K", k)
    );
    parse_str(Path::new("e.yaml"), &yaml).unwrap()
}

fn labels(c: &EncryptionConfig) -> Vec<KeyLabel> {
    c.resolve(&GroupResource::secrets()).read_keys()
}

fn roundtrip(c: &EncryptionConfig) {
    let text = render_yaml(c);
    let back = parse_str(Path::new("r.yaml"), &text).unwrap();
    assert_eq!(atrest::config::layout(&back), atrest::config::layout(c));
}

fn new_key(p: KeyProvider) -> RotationTarget {
    RotationTarget::Key(Arc::new(Key::generate("new", p).unwrap()))
}

fn set(labels: &[&str]) -> BTreeSet<KeyLabel> {
    labels.iter().map(|l| l.parse().unwrap()).collect()
}

#[test]
fn rotate_a_key_of_the_same_provider() {
    let c = cfg("[{aescbc: {keys: [{name: k1, secret: K}]}}, {identity: {}}]");
    let rules = rules_for(&c, &[GroupResource::secrets()]);
    assert_eq!(rules, vec![0]);
    let t = new_key(KeyProvider::Aescbc);
    let c = add_read_key(&c, &rules, &t).unwrap();
    assert_eq!(labels(&c), ["aescbc:k1", "aescbc:new", "identity"]);
    let again = add_read_key(&c, &rules, &t).unwrap();
    assert_eq!(labels(&again), labels(&c), "idempotent");
    let c = promote(&c, &rules, &t.label()).unwrap();
    assert_eq!(labels(&c), ["aescbc:new", "aescbc:k1", "identity"]);
    let c = remove(&c, &rules, &set(&["aescbc:k1"])).unwrap();
    assert_eq!(labels(&c), ["aescbc:new", "identity"]);
    assert_eq!(
        c.resolve(&GroupResource::parse("events")).read_keys(),
        ["identity"],
        "other rules untouched"
    );
    roundtrip(&c);
}

#[test]
fn turn_encryption_on_switch_provider_and_turn_it_off() {
    let c = cfg("[{identity: {}}]");
    let rules = rules_for(&c, &[GroupResource::secrets()]);
    let aes = new_key(KeyProvider::Aescbc);
    let c = promote(
        &add_read_key(&c, &rules, &aes).unwrap(),
        &rules,
        &aes.label(),
    )
    .unwrap();
    assert_eq!(labels(&c), ["aescbc:new", "identity"]);
    let c = remove(&c, &rules, &set(&["identity"])).unwrap();
    assert_eq!(labels(&c), ["aescbc:new"]);

    let sb = RotationTarget::Key(Arc::new(
        Key::generate("sb", KeyProvider::Secretbox).unwrap(),
    ));
    let c = add_read_key(&c, &rules, &sb).unwrap();
    assert_eq!(labels(&c), ["aescbc:new", "secretbox:sb"]);
    let c = promote(&c, &rules, &sb.label()).unwrap();
    assert_eq!(labels(&c), ["secretbox:sb", "aescbc:new"]);
    roundtrip(&c);

    let off = RotationTarget::Identity;
    let c = add_read_key(&c, &rules, &off).unwrap();
    assert_eq!(labels(&c), ["secretbox:sb", "identity", "aescbc:new"]);
    let c = promote(&c, &rules, &off.label()).unwrap();
    assert_eq!(labels(&c), ["identity", "secretbox:sb", "aescbc:new"]);
    let c = remove(&c, &rules, &set(&["secretbox:sb", "aescbc:new"])).unwrap();
    assert_eq!(labels(&c), ["identity"]);
    roundtrip(&c);
}

#[test]
fn refuses_to_remove_the_write_key_or_promote_an_unknown_key() {
    let c = cfg("[{aescbc: {keys: [{name: k1, secret: K}]}}, {identity: {}}]");
    let rules = rules_for(&c, &[GroupResource::secrets()]);
    assert_eq!(
        remove(&c, &rules, &set(&["aescbc:k1"])).unwrap_err(),
        EditError::RemovesWriteKey {
            rule: 0,
            label: "aescbc:k1".parse().unwrap()
        }
    );
    assert_eq!(
        promote(&c, &rules, &new_key(KeyProvider::Aesgcm).label()).unwrap_err(),
        EditError::NotAReadKey {
            rule: 0,
            label: "aesgcm:new".parse().unwrap()
        }
    );
    assert_eq!(
        promote(&c, &[7], &KeyLabel::Identity).unwrap_err(),
        EditError::NoSuchRule { rule: 7 }
    );
}
