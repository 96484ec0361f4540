use super::*;
use crate::etcd::mvcc::{Revision, StoredKeyValue, schema};

#[test]
fn fnv_matches_the_reference_vector() {
    // FNV-1a 64 of "a" (from the FNV reference).
    assert_eq!(fnv64a(b"a"), 0xaf63dc4c8601ec8c);
}

/// Data files written by the real etcd 3.5.21, 3.6.13 and 3.7.0 (the fuzz target's seeds; the
/// same writes on each: six puts, three overwrites, a configmap, a delete, `compact 4`): name,
/// revisions in bucket `key`, finished compaction revision.
const FILES: &[(&str, u64, i64)] = &[
    ("etcd-3.5-small-snapshot.db", 11, 4),
    ("etcd-3.6-small-snapshot.db", 11, 4),
    ("etcd-3.7-small-snapshot.db", 11, 4),
];

fn seed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions/db_file")
        .join(name)
}

#[test]
fn files_written_by_etcd_open_and_walk() {
    for (name, revisions, compacted) in FILES {
        let path = seed(name);
        let before = std::fs::read(&path).unwrap();
        let mut db = BoltFile::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let keys = db.bucket(schema::KEY).unwrap().expect("bucket key");
        let mut cursor = db.cursor(&keys);
        let mut n = 0;
        let mut last = None;
        while let Some(e) = cursor.next(&db).unwrap() {
            let rev = Revision::parse(&e.key).expect("a revision key");
            assert!(Some(rev) > last, "{name}: revision order");
            last = Some(rev);
            let kv = StoredKeyValue::decode(&e.value).expect("a KeyValue");
            // Revision and KeyValue agree; lookups find what the walk found.
            if !rev.tombstone {
                assert_eq!(kv.mod_revision, rev.main, "{name}");
            }
            assert_eq!(
                db.get(&keys, &e.key).unwrap().as_deref(),
                Some(&e.value[..])
            );
            n += 1;
        }
        assert_eq!(n, *revisions, "{name}");
        let meta = db.bucket(schema::META).unwrap().expect("bucket meta");
        let c = db.get(&meta, schema::FINISHED_COMPACT).unwrap().unwrap();
        assert_eq!(Revision::parse(&c).unwrap().main, *compacted, "{name}");
        assert_eq!(db.get(&keys, b"no such key").unwrap(), None);
        let used = db.reachable().unwrap();
        assert!(used.contains(0) && used.contains(1) && used.len() <= db.meta().pgid);
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name}: not written");
    }
}

#[test]
fn a_meta_page_with_a_bad_checksum_falls_back_to_the_other() {
    let path = seed(FILES[0].0);
    let mut bytes = std::fs::read(&path).unwrap();
    let good = BoltFile::open(&path).unwrap().meta();
    // A snapshot writes page 0 with the transaction's id and page 1 with the one before, both
    // naming the same tree. Break page 0's checksum: page 1 is used.
    let current = 0;
    bytes[current + PAGE_HEADER + 60] ^= 0xff;
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.db");
    std::fs::write(&broken, &bytes).unwrap();
    let meta = BoltFile::open(&broken).unwrap().meta();
    assert_eq!((meta.txid + 1, meta.root), (good.txid, good.root));
    // Both broken: not a bbolt file, and the message says why for each page.
    let other = if current == 0 { 4096 } else { 0 };
    bytes[other + PAGE_HEADER + 60] ^= 0xff;
    std::fs::write(&broken, &bytes).unwrap();
    let err = BoltFile::open(&broken).err().unwrap().to_string();
    assert!(
        err.contains("meta page 0") && err.contains("checksum"),
        "{err}"
    );
}
