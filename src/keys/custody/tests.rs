//! Custody without a cluster: sealing, opening, thresholds and what never reaches disk.

use super::*;
use crate::model::KeyProvider;

fn identity(dir: &Path, name: &str) -> (PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let path = dir.join(format!("{name}.txt"));
    std::fs::write(&path, format!("{}\n", id.to_string().expose_secret())).unwrap();
    (path, id.to_public().to_string())
}

fn key(name: &str) -> Arc<Key> {
    Arc::new(Key::generate(name, KeyProvider::Aescbc).unwrap())
}

/// Every file under `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.extend(std::fs::read(e).unwrap());
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_archive_sealed_to_two_recipients_opens_with_either_and_holds_no_key_in_clear() {
    let ids = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (a, ra) = identity(ids.path(), "a");
    let (b, rb) = identity(ids.path(), "b");
    let mut c = Custody::new(&[ra, rb], None).unwrap();
    let k = key("old");
    c.archive_keys(
        state.path(),
        std::slice::from_ref(&k),
        "2026-12-01T00:00:00Z",
    )
    .unwrap();
    let files = sealed_files(&state.path().join(SEALED_ARCHIVE_DIR));
    assert_eq!(files.len(), 1);
    for id in [&a, &b] {
        let opener = Opener::new(Some(&c), std::slice::from_ref(id), &[]).unwrap();
        let keys = opener.archive_keys(&files[0]).unwrap();
        assert_eq!(keys[0].fingerprint(), k.fingerprint());
    }
    let bytes = all_bytes(state.path());
    assert!(!contains(&bytes, k.secret_base64().as_bytes()));
    assert!(
        contains(&bytes, k.fingerprint().as_bytes()),
        "the index names it"
    );
    // The custody file reads back, and records the key without material.
    let back = Custody::load(state.path()).unwrap().unwrap();
    assert_eq!(back.archived()[0].fingerprint, k.fingerprint());
    // Another identity opens nothing, and says which file and what to pass.
    let (other, _) = identity(ids.path(), "other");
    let err = Opener::new(Some(&c), &[other], &[])
        .unwrap()
        .open(&files[0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no identity given opens it"), "{err}");
}

#[test]
fn two_of_three_one_share_is_refused_two_open() {
    let ids = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (a, ra) = identity(ids.path(), "a");
    let (b, rb) = identity(ids.path(), "b");
    let (_c, rc) = identity(ids.path(), "c");
    let mut c = Custody::new(&[ra, rb, rc], Some(2)).unwrap();
    let k = key("old");
    c.archive_keys(
        state.path(),
        std::slice::from_ref(&k),
        "2026-12-01T00:00:00Z",
    )
    .unwrap();
    let file = &sealed_files(&state.path().join(SEALED_ARCHIVE_DIR))[0];
    // One custodian alone: a clear refusal, nothing opened.
    let err = Opener::new(Some(&c), std::slice::from_ref(&a), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 of the 2 shares needed"), "{err}");
    // The identity alone does not open the file either (it is sealed to the archive key).
    let lone = Opener::new(None, std::slice::from_ref(&a), &[]).unwrap();
    assert!(lone.open(file).is_err());
    // Two custodians: one unwraps a share on their machine, the other passes an identity.
    let share = lone.share_of(&c).unwrap();
    let share_file = ids.path().join("a.share");
    std::fs::write(&share_file, &*share).unwrap();
    let opener = Opener::new(Some(&c), std::slice::from_ref(&b), &[share_file]).unwrap();
    assert_eq!(
        opener.archive_keys(file).unwrap()[0].fingerprint(),
        k.fingerprint()
    );
}

#[test]
fn bad_recipients_and_thresholds_are_refused_by_position() {
    let err = Custody::new(&["age1nope".into()], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("recipient 1 (age1nope)"), "{err}");
    let ids = tempfile::tempdir().unwrap();
    let (_, r) = identity(ids.path(), "a");
    let err = Custody::new(&[r], Some(2)).unwrap_err().to_string();
    assert!(err.contains("--seal-threshold 2"), "{err}");
}

/// A throwaway SSH key made for this test (`ssh-keygen -t ed25519 -N ""`): custodians may give
/// their SSH public key instead of an age recipient.
const SSH_PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBgnwbyaAxcWA1biLnzIQ0zJFNF4izA4Pt1bsH/E0JbZQAAAJAlo8onJaPK
JwAAAAtzc2gtZWQyNTUxOQAAACBgnwbyaAxcWA1biLnzIQ0zJFNF4izA4Pt1bsH/E0JbZQ
AAAECHb58voGMpHd1b/RZfeYHg3vDcc71AHoiHCIT/SAjafWCfBvJoDFxYDVuIufMhDTMk
U0XiLMDg+3Vuwf8TQltlAAAAC2F0cmVzdC10ZXN0AQI=
-----END OPENSSH PRIVATE KEY-----
";
const SSH_PUBLIC: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGCfBvJoDFxYDVuIufMhDTMkU0XiLMDg+3Vuwf8TQltl atrest-test";

#[test]
fn an_ssh_custodian_seals_and_opens_with_the_ssh_key() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("id_ed25519");
    std::fs::write(&private, SSH_PRIVATE).unwrap();
    let state = dir.path().join("state");
    let mut c = Custody::new(&[SSH_PUBLIC.into()], None).unwrap();
    let k = key("old");
    c.archive_keys(&state, std::slice::from_ref(&k), "2026-12-01T00:00:00Z")
        .unwrap();
    let file = &sealed_files(&state.join(SEALED_ARCHIVE_DIR))[0];
    let opener = Opener::new(Some(&c), &[private], &[]).unwrap();
    assert_eq!(
        opener.archive_keys(file).unwrap()[0].fingerprint(),
        k.fingerprint()
    );
}
