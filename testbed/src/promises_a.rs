//! Helpers for `tests/promises_rotate.rs`: editing atrest's canonical config text the way an
//! admin would behind its back (add a key, reorder two keys), reading a key's secret out of it,
//! and finding an apiserver's identity Lease by the hostname it runs under.

use std::time::{Duration, Instant};

use crate::ControlPlane;

/// The line index of `- name: "<name>"` in atrest's canonical config text (its `secret:` line
/// follows it).
fn name_line(lines: &[&str], name: &str) -> usize {
    let want = format!("- name: {}", serde_json::to_string(name).unwrap());
    lines
        .iter()
        .position(|l| l.trim() == want)
        .unwrap_or_else(|| panic!("no key {name} in the config"))
}

/// The base64 secret of key `name` in atrest's canonical config text.
pub fn key_secret(yaml: &str, name: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let i = name_line(&lines, name);
    let secret = lines[i + 1]
        .trim()
        .strip_prefix("secret: ")
        .unwrap_or_else(|| panic!("no secret line after key {name}"));
    serde_json::from_str(secret).unwrap_or_else(|_| secret.to_string())
}

/// The config text with the name and secret lines of keys `a` and `b` swapped.
pub fn swap_keys(yaml: &str, a: &str, b: &str) -> String {
    let mut lines: Vec<&str> = yaml.lines().collect();
    let (i, j) = (name_line(&lines, a), name_line(&lines, b));
    lines.swap(i, j);
    lines.swap(i + 1, j + 1);
    lines.join("\n") + "\n"
}

/// The config text with key `name` (base64 `secret`) inserted right after key `after`.
pub fn add_key_after(yaml: &str, after: &str, name: &str, secret: &str) -> String {
    let mut lines: Vec<String> = yaml.lines().map(str::to_string).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let i = name_line(&refs, after);
    let indent: String = lines[i].chars().take_while(|c| *c == ' ').collect();
    lines.insert(
        i + 2,
        format!(
            "{indent}  secret: {}",
            serde_json::to_string(secret).unwrap()
        ),
    );
    lines.insert(
        i + 2,
        format!("{indent}- name: {}", serde_json::to_string(name).unwrap()),
    );
    lines.join("\n") + "\n"
}

/// The name of the kube-apiserver identity Lease whose `kubernetes.io/hostname` label is
/// `hostname`, waiting (up to 60 s) until the apiserver has created it.
pub async fn identity_lease_of(cp: &ControlPlane, hostname: &str) -> String {
    use k8s_openapi::api::coordination::v1::Lease;
    let api: kube::Api<Lease> = kube::Api::namespaced(cp.client().await, "kube-system");
    let lp = kube::api::ListParams::default().labels(&format!(
        "apiserver.kubernetes.io/identity=kube-apiserver,kubernetes.io/hostname={hostname}"
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(list) = api.list(&lp).await {
            let names: Vec<String> = list
                .items
                .iter()
                .filter_map(|l| l.metadata.name.clone())
                .collect();
            match names.as_slice() {
                [one] => return one.clone(),
                [] => {}
                many => panic!("several identity leases for hostname {hostname}: {many:?}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no identity lease for hostname {hostname} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - \"secrets\"\n    providers:\n      - aescbc:\n          keys:\n            - name: \"key1\"\n              secret: \"AAAA\"\n            - name: \"key2\"\n              secret: \"BBBB\"\n      - identity: {}\n";

    #[test]
    fn edits_of_the_canonical_text() {
        assert_eq!(key_secret(YAML, "key2"), "BBBB");
        let swapped = swap_keys(YAML, "key1", "key2");
        assert!(swapped.find("\"key2\"").unwrap() < swapped.find("\"key1\"").unwrap());
        assert_eq!(key_secret(&swapped, "key1"), "AAAA");
        let added = add_key_after(YAML, "key1", "key3", "CCCC");
        assert_eq!(key_secret(&added, "key3"), "CCCC");
        assert!(added.find("\"key3\"").unwrap() < added.find("\"key2\"").unwrap());
        assert!(added.find("\"key1\"").unwrap() < added.find("\"key3\"").unwrap());
    }
}
