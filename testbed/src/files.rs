//! Files the test bed writes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes a file atomically with mode 0600 (the apiserver reloads from what it reads; a torn
/// write would be a test-bed bug).
pub fn write_private(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    {
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(contents).unwrap();
        f.sync_all().unwrap();
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
