//! Writes many small Secrets straight into etcd, in the kube-apiserver's storage format
//! (`k8s\0` + a protobuf `runtime.Unknown` holding a `v1.Secret`), for the million-object
//! benchmark: seeding a million through the API would take far too long. Only the benchmark
//! writes etcd this way; atrest itself never does.
//!
//!   cargo run --release --example seed_etcd -- ENDPOINT NAMESPACE COUNT [SIZE_BYTES] [PREFIX] [SEGMENT]
//!
//! Names are `m-<number>`; each Secret holds SIZE_BYTES (default 64) under key `value`. Puts go
//! in transactions of 128 (etcd's default limit), several in flight; `SEED_TXN=1` writes one per
//! transaction instead, a revision per object as the apiserver writes them (for history). SEGMENT is the key segment
//! of the resource (default `secrets`; `configmaps` gets ConfigMaps, any other segment — meant
//! for custom resources no CRD serves, e.g. `example.com/widgets` — gets Secrets: a scan
//! classifies bytes, whatever kind they hold, and an apiserver serving that resource would
//! refuse to cache objects of another kind).

use futures::StreamExt;
use k8s_pb::api::core::v1::{ConfigMap, Secret};
use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;

/// Puts per transaction unless `SEED_TXN` says otherwise: etcd's default limit.
const BATCH: usize = 128;

fn value(ns: &str, name: &str, i: usize, size: usize, configmap: bool) -> Vec<u8> {
    let metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        uid: Some(format!("00000000-0000-4000-8000-{i:012}")),
        resource_version: None,
        creation_timestamp: Some(Time {
            seconds: Some(1_700_000_000),
            nanos: None,
        }),
        ..Default::default()
    };
    let data: Vec<u8> = (0..size).map(|j| b'a' + ((i + j) % 26) as u8).collect();
    let (kind, raw) = if configmap {
        let cm = ConfigMap {
            metadata: Some(metadata),
            data: [(
                "app.properties".to_string(),
                String::from_utf8(data).unwrap_or_default(),
            )]
            .into(),
            ..Default::default()
        };
        ("ConfigMap", cm.encode_to_vec())
    } else {
        let secret = Secret {
            metadata: Some(metadata),
            data: [("value".to_string(), data)].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        ("Secret", secret.encode_to_vec())
    };
    let env = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut v = b"k8s\0".to_vec();
    v.extend(env.encode_to_vec());
    v
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: seed_etcd ENDPOINT NAMESPACE COUNT [SIZE_BYTES] [PREFIX] [SEGMENT]");
        std::process::exit(2);
    }
    let client = etcd_client::Client::connect([args[0].as_str()], None)
        .await
        .expect("connect to etcd");
    let ns = args[1].clone();
    let count: usize = args[2].parse().expect("COUNT");
    let size: usize = args.get(3).map(|s| s.parse().expect("SIZE")).unwrap_or(64);
    let prefix = args.get(4).cloned().unwrap_or_else(|| "/registry".into());
    let segment = args.get(5).cloned().unwrap_or_else(|| "secrets".into());
    let per_txn: usize = std::env::var("SEED_TXN")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| (1..=BATCH).contains(n))
        .unwrap_or(BATCH);
    // Single puts need more in flight to keep etcd's batching busy.
    let in_flight = if per_txn < 16 { 64 } else { 8 };
    let t0 = std::time::Instant::now();
    let batches: Vec<std::ops::Range<usize>> = (0..count)
        .step_by(per_txn)
        .map(|s| s..(s + per_txn).min(count))
        .collect();
    let done = futures::stream::iter(batches)
        .map(|range| {
            let mut kv = client.kv_client();
            let ns = ns.clone();
            let prefix = prefix.clone();
            let segment = segment.clone();
            async move {
                let ops: Vec<etcd_client::TxnOp> = range
                    .map(|i| {
                        let name = format!("m-{i:07}");
                        etcd_client::TxnOp::put(
                            format!("{prefix}/{segment}/{ns}/{name}"),
                            value(&ns, &name, i, size, segment == "configmaps"),
                            None,
                        )
                    })
                    .collect();
                kv.txn(etcd_client::Txn::new().and_then(ops))
                    .await
                    .expect("txn");
            }
        })
        .buffer_unordered(in_flight)
        .count()
        .await;
    eprintln!(
        "wrote {count} objects under {prefix}/{segment}/ ({done} transactions) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
