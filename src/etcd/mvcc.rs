//! etcd's MVCC records as its store holds them: bucket `key` maps a revision to a
//! `mvccpb.KeyValue`, bucket `meta` holds the compaction marks (etcd `server/storage/mvcc`,
//! `server/storage/schema`).

/// A revision key of bucket `key`: main revision, sub revision, and whether it is a tombstone
/// (the key was deleted at that revision).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision {
    /// The store revision of the transaction.
    pub main: i64,
    /// The change's index within the transaction.
    pub sub: i64,
    /// A delete marker, not a value.
    pub tombstone: bool,
}

impl Revision {
    /// Parses `main(8 BE) '_' sub(8 BE)` with an optional trailing `t`.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if !(b.len() == 17 || b.len() == 18) || b[8] != b'_' {
            return None;
        }
        let tombstone = match b.get(17) {
            None => false,
            Some(b't') => true,
            Some(_) => return None,
        };
        Some(Self {
            main: i64::from_be_bytes(b[0..8].try_into().ok()?),
            sub: i64::from_be_bytes(b[9..17].try_into().ok()?),
            tombstone,
        })
    }

    /// The revision key bytes (without the tombstone mark).
    pub fn key_bytes(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(18);
        k.extend_from_slice(&self.main.to_be_bytes());
        k.push(b'_');
        k.extend_from_slice(&self.sub.to_be_bytes());
        if self.tombstone {
            k.push(b't');
        }
        k
    }
}

/// `mvccpb.KeyValue`, the fields atrest reads (unknown fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredKeyValue {
    /// The etcd key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Revision of the key's creation.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// Revision of this write.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// The stored value (what the apiserver wrote: plaintext or `k8s:enc:…`).
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

impl StoredKeyValue {
    /// Decodes a value of bucket `key`.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        <Self as prost::Message>::decode(bytes).ok()
    }
}

/// Bucket names and meta keys of the etcd v3 schema.
pub mod schema {
    /// Revision → `mvccpb.KeyValue`.
    pub const KEY: &[u8] = b"key";
    /// Store metadata.
    pub const META: &[u8] = b"meta";
    /// The last finished compaction (a revision key).
    pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
    /// The last scheduled compaction (a revision key).
    pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_round_trip_and_reject_garbage() {
        let r = Revision {
            main: 42,
            sub: 1,
            tombstone: true,
        };
        assert_eq!(Revision::parse(&r.key_bytes()), Some(r));
        assert_eq!(Revision::parse(b"short"), None);
        let mut bad = r.key_bytes();
        bad[8] = b'x';
        assert_eq!(Revision::parse(&bad), None);
        let mut bad = r.key_bytes();
        bad[17] = b'q';
        assert_eq!(Revision::parse(&bad), None);
    }
}
