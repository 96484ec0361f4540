//! Free pages of a db file: bbolt never clears a page it frees, so a page outside the current
//! tree keeps the values it last held until the file is rewritten (`etcdctl defrag`, or a
//! snapshot restore). This census counts the stored Kubernetes values such pages still hold, by
//! resource and key where a page still parses as a leaf, by byte pattern otherwise; it never
//! shows their content.

use std::collections::BTreeMap;

use super::{DbError, DbFile};
use crate::codec::{ClassifyConfig, ClassifyOptions};
use crate::config::EncryptionConfig;
use crate::etcd::bolt::{BoltFile, Visited, is_leaf, leaf_elem, page_header};
use crate::etcd::mvcc::{Revision, StoredKeyValue};
use crate::etcd::scan::Item;
use crate::etcd::scan::{Classifier, ScanPlan, Visitor};
use crate::model::census::{FreeGroup, FreePages};
use crate::model::{Residue, State};

/// Counts what the free pages of `db` hold, for the resources of `plan`. Reads every page once.
pub fn census(
    db: &mut DbFile,
    config: &EncryptionConfig,
    etcd_prefix: &str,
    plan: &ScanPlan,
) -> Result<FreePages, DbError> {
    let prefix = db.prefix.clone();
    let bolt = db.bolt_mut();
    let reachable = bolt.reachable()?;
    let bolt: &BoltFile = bolt;
    let pages = bolt.meta().pgid;
    let classify = ClassifyConfig::default();
    let mut tally = Tally {
        prefix: &prefix,
        classifier: Classifier::new(config, etcd_prefix, plan, &classify),
        options: ClassifyOptions::default(),
        groups: BTreeMap::new(),
    };
    let mut out = FreePages {
        pages,
        ..FreePages::default()
    };
    let mut id = 2;
    while id < pages {
        if reachable.contains(id) {
            id += 1;
            continue;
        }
        out.free_pages += 1;
        let Some(mut bytes) = bolt.raw_page(id)? else {
            break;
        };
        let mut span = 1;
        if let Some((count, overflow)) = leaf_header(&bytes, id) {
            let extra = read_overflow(bolt, &reachable, id, overflow, pages, &mut bytes)?;
            span += extra;
            out.free_pages += extra;
            if tally.leaf(&bytes, count) > 0 {
                out.leaf_pages += 1;
                id += span;
                continue;
            }
        }
        count_patterns(&bytes, &mut out.patterns);
        id += span;
    }
    Ok(tally.finish(out))
}

/// A free page's element count and overflow when it still reads as a non-empty leaf written
/// at its own id (a page reused for something else is not), else `None`.
fn leaf_header(bytes: &[u8], id: u64) -> Option<(usize, u64)> {
    let (flags, count, overflow) = page_header(bytes)?;
    let self_id = bytes
        .get(0..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    (self_id == Some(id) && is_leaf(flags) && count > 0).then_some((count, u64::from(overflow)))
}

/// Appends to `bytes` the `overflow` pages after `id` when they are all free (a freed value
/// larger than a page spans them), and says how many pages it appended.
fn read_overflow(
    bolt: &BoltFile,
    reachable: &Visited,
    id: u64,
    overflow: u64,
    pages: u64,
    bytes: &mut Vec<u8>,
) -> Result<u64, DbError> {
    if overflow == 0
        || id + overflow >= pages
        || (id + 1..=id + overflow).any(|p| reachable.contains(p))
    {
        return Ok(0);
    }
    for p in id + 1..=id + overflow {
        if let Some(more) = bolt.raw_page(p)? {
            bytes.extend_from_slice(&more);
        }
    }
    Ok(overflow)
}

/// The free values found so far, grouped by resource, stored key and state.
struct Tally<'a> {
    /// The db file's key prefix: values outside it are not Kubernetes objects.
    prefix: &'a [u8],
    /// Maps keys to resources and classifies their values.
    classifier: Classifier<'a>,
    /// How values are classified (no verification: only the shape is read).
    options: ClassifyOptions<'a>,
    /// The groups, keyed for a stable order.
    groups: BTreeMap<(String, String, State), FreeGroup>,
}

impl Tally<'_> {
    /// Counts the stored values of a leaf page's first `count` elements; how many parsed as
    /// stored key-values (none: the page is not a leaf of bucket `key` after all).
    fn leaf(&mut self, bytes: &[u8], count: usize) -> usize {
        let mut parsed = 0;
        for i in 0..count {
            let Some((_, k, v)) = leaf_elem(bytes, i) else {
                break;
            };
            let (Some(_), Some(kv)) = (Revision::parse(k), StoredKeyValue::decode(v)) else {
                continue;
            };
            parsed += 1;
            self.value(&kv);
        }
        parsed
    }

    /// Adds one freed key-value to its group, when it is a non-empty value of a planned resource.
    fn value(&mut self, kv: &StoredKeyValue) {
        if !kv.key.starts_with(self.prefix) || kv.value.is_empty() {
            return;
        }
        let Some(range) = self.classifier.range_of(&kv.key) else {
            return;
        };
        let found = self.classifier.class_of(
            range,
            &kv.key,
            &kv.value,
            &self.options,
            &mut Ignore,
            |info, _, c| {
                (
                    info.resource.to_string(),
                    c.label.clone().into_owned(),
                    c.state,
                    Residue::of(c.state, c.apiserver_readable, info.encrypts),
                )
            },
        );
        if let Some((resource, label, state, residue)) = found {
            let g = self
                .groups
                .entry((resource.clone(), label.to_string(), state))
                .or_insert_with(|| FreeGroup {
                    resource,
                    stored_as: label,
                    state,
                    residue,
                    copies: 0,
                });
            g.copies += 1;
        }
    }

    /// The groups into `out`, `secrets` first, with the count of copies that are residue.
    fn finish(self, mut out: FreePages) -> FreePages {
        let mut values: Vec<FreeGroup> = self.groups.into_values().collect();
        values.sort_by_key(|g| g.resource != "secrets");
        out.residue = values
            .iter()
            .filter(|g| g.residue.is_some())
            .map(|g| g.copies)
            .sum();
        out.values = values;
        out
    }
}

/// Counts the byte patterns of stored values in `bytes`.
pub fn count_patterns(bytes: &[u8], out: &mut BTreeMap<String, u64>) {
    const PROTO: &[u8] = b"k8s\0";
    const ENC: &[u8] = b"k8s:enc:";
    const JSON_KIND: &[u8] = b"{\"kind\":\"";
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(PROTO) {
            *out.entry("plaintext-protobuf".into()).or_default() += 1;
            i += PROTO.len();
        } else if rest.starts_with(ENC) {
            let name: String = rest[ENC.len()..]
                .iter()
                .take(16)
                .take_while(|b| b.is_ascii_alphanumeric())
                .map(|b| *b as char)
                .collect();
            let name = if name.is_empty() { "?".into() } else { name };
            *out.entry(format!("encrypted:{name}")).or_default() += 1;
            i += ENC.len();
        } else if rest.starts_with(JSON_KIND) {
            let kind: String = rest[JSON_KIND.len()..]
                .iter()
                .take(64)
                .take_while(|b| b.is_ascii_alphanumeric())
                .map(|b| *b as char)
                .collect();
            *out.entry(format!("json:{kind}")).or_default() += 1;
            i += JSON_KIND.len();
        } else {
            i += 1;
        }
    }
}

struct Ignore;

impl Visitor for Ignore {
    fn visit(&mut self, _item: &Item<'_>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_counted_by_kind_without_content() {
        let mut out = BTreeMap::new();
        let mut page = b"xxk8s\0\x0a\x02v1k8s:enc:aescbc:v1:key1:zzzz".to_vec();
        page.extend_from_slice(b"{\"kind\":\"Secret\",\"apiVersion\":\"v1\"} k8s:enc:kms:v2:x");
        count_patterns(&page, &mut out);
        assert_eq!(out.get("plaintext-protobuf"), Some(&1));
        assert_eq!(out.get("encrypted:aescbc"), Some(&1));
        assert_eq!(out.get("encrypted:kms"), Some(&1));
        assert_eq!(out.get("json:Secret"), Some(&1));
        assert_eq!(out.len(), 4);
    }
}
