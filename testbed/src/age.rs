//! The reference age tool (`age`, `age-keygen` from filippo.io/age, pinned in
//! `scripts/k8s/age`): an implementation that is not atrest's, so a test can prove that what
//! atrest encrypts opens with it and what it encrypts opens in atrest. Found in the same folder
//! as the Kubernetes binaries ([`bin_dir`]), so `ATREST_K8S_BIN` and the matrix pairs apply.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::proc::bin_dir;

/// The `age` binary, or a panic that says how to build it: a missing oracle must fail the test,
/// never let it pass unchecked.
pub fn age_bin() -> PathBuf {
    tool("age")
}

/// The `age-keygen` binary, or a panic that says how to build it.
pub fn age_keygen_bin() -> PathBuf {
    tool("age-keygen")
}

fn tool(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "the test bed needs the reference {name} (filippo.io/age), but {} is missing.\n\
         Build it with: scripts/k8s/build.sh   (or run scripts/test.sh, which does it)",
        path.display()
    );
    path
}

/// An X25519 identity made by `age-keygen`.
#[derive(Clone, Debug)]
pub struct AgeIdentity {
    /// The identity file (`AGE-SECRET-KEY-1…`, mode 0600), what `age -d -i` and atrest read.
    pub file: PathBuf,
    /// Its recipient (`age1…`), what `age -r` and atrest's configs take.
    pub recipient: String,
}

/// A new identity in `dir/name` (`age-keygen -o`); the recipient is what `age-keygen -y` derives
/// from the file, not a comment that could drift from the key.
pub fn keygen(dir: &Path, name: &str) -> AgeIdentity {
    let file = dir.join(name);
    let out = run(Command::new(age_keygen_bin()).arg("-o").arg(&file), None);
    check("age-keygen -o", &out);
    let out = run(Command::new(age_keygen_bin()).arg("-y").arg(&file), None);
    check("age-keygen -y", &out);
    let recipient = String::from_utf8(out.stdout)
        .expect("age-keygen -y printed UTF-8")
        .trim()
        .to_string();
    assert!(
        recipient.starts_with("age1"),
        "age-keygen -y printed no recipient: {recipient:?}"
    );
    // The identity is a custodian's secret: no output or file of atrest may hold it.
    let text = std::fs::read_to_string(&file).expect("read the identity file");
    for line in text.lines().filter(|l| l.starts_with("AGE-SECRET-KEY-")) {
        crate::leak::register_value(line);
    }
    AgeIdentity { file, recipient }
}

/// `plaintext` encrypted by `age -r R…` (`-a`: the ASCII armor); a failure panics, since the
/// reference tool failing to encrypt is a broken test bed, not a result.
pub fn encrypt(recipients: &[&str], plaintext: &[u8], armor: bool) -> Vec<u8> {
    let mut cmd = Command::new(age_bin());
    for r in recipients {
        cmd.arg("-r").arg(r);
    }
    if armor {
        cmd.arg("-a");
    }
    let out = run(&mut cmd, Some(plaintext));
    check("age -r", &out);
    out.stdout
}

/// `file` decrypted by `age -d -i I…`; `Err` holds age's stderr, as a test that expects a refusal
/// (wrong identity, damaged file) checks it.
pub fn decrypt(identities: &[&Path], file: &Path) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new(age_bin());
    cmd.arg("-d");
    for i in identities {
        cmd.arg("-i").arg(i);
    }
    let out = run(cmd.arg(file), None);
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs `cmd` with `stdin` fed from a thread (a large input would otherwise fill the pipe while
/// age's output fills the other one).
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd.get_program().to_string_lossy()));
    std::thread::scope(|s| {
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            s.spawn(move || {
                // A broken pipe means age exited early; its status and stderr tell why.
                let _ = pipe.write_all(input);
            });
        }
        child.wait_with_output().expect("age's output")
    })
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} exited with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_identity() {
        let dir = tempfile::tempdir().unwrap();
        let alice = keygen(dir.path(), "alice.txt");
        let bob = keygen(dir.path(), "bob.txt");
        let eve = keygen(dir.path(), "eve.txt");
        assert_ne!(alice.recipient, bob.recipient);
        let key = std::fs::read_to_string(&alice.file).unwrap();
        assert!(key.contains(&format!("# public key: {}", alice.recipient)));
        let plaintext: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();

        for armor in [false, true] {
            let sealed = encrypt(&[&alice.recipient, &bob.recipient], &plaintext, armor);
            let header: &[u8] = if armor {
                b"-----BEGIN AGE ENCRYPTED FILE-----\n"
            } else {
                b"age-encryption.org/v1\n"
            };
            assert!(sealed.starts_with(header), "armor {armor}");
            let file = dir.path().join(format!("sealed-{armor}.age"));
            std::fs::write(&file, &sealed).unwrap();

            for who in [&alice, &bob] {
                assert_eq!(decrypt(&[&who.file], &file).unwrap(), plaintext);
            }
            assert_eq!(
                decrypt(&[&eve.file, &bob.file], &file).unwrap(),
                plaintext,
                "any one matching identity opens it"
            );
            let err = decrypt(&[&eve.file], &file).unwrap_err();
            assert!(err.contains("no identity matched"), "{err}");
        }
    }
}
