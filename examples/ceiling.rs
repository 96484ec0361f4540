//! The write ceiling of a control plane for re-encryption: the cheapest client the apiserver
//! allows that rewrites every Secret of a namespace. It LISTs in protobuf (500 per page) and
//! PUTs each item back unchanged, as protobuf, with the resourceVersion the list gave it (a
//! conflict is a 409, never an overwrite), CONCURRENCY at a time. No JSON, no GET, no
//! decoding of the objects beyond their name: what any client must at least do.
//!
//!   cargo run --release --example ceiling -- KUBECONFIG NAMESPACE CONCURRENCY
//!
//! Prints `written W conflicts C failed F seconds S`; exits 1 when anything failed.

use futures::StreamExt;
use http_body_util::BodyExt;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// A list, its items kept as the raw bytes of each object.
#[derive(Clone, PartialEq, prost::Message)]
struct RawList {
    #[prost(message, optional, tag = "1")]
    metadata: Option<k8s_pb::apimachinery::pkg::apis::meta::v1::ListMeta>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    items: Vec<Vec<u8>>,
}

/// Only the name of an object.
#[derive(Clone, PartialEq, prost::Message)]
struct Named {
    #[prost(message, optional, tag = "1")]
    metadata: Option<NameOnly>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct NameOnly {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
}

async fn send(client: &kube::Client, req: http::Request<Vec<u8>>) -> (u16, hyper::body::Bytes) {
    let (parts, body) = req.into_parts();
    let req = http::Request::from_parts(parts, kube::client::Body::from(body));
    match client.send(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            (status, body.unwrap_or_default())
        }
        Err(_) => (0, hyper::body::Bytes::new()),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        eprintln!("usage: ceiling KUBECONFIG NAMESPACE CONCURRENCY");
        std::process::exit(2);
    }
    let kubeconfig = kube::config::Kubeconfig::read_from(&args[0]).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    let client = kube::Client::try_from(cfg).expect("client");
    let ns = &args[1];
    let concurrency: usize = args[2].parse().expect("CONCURRENCY");
    let t0 = std::time::Instant::now();

    // Pages are listed while the previous page's PUTs run.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1000);
    let lister = {
        let client = client.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            let mut cont = String::new();
            loop {
                let uri = format!("/api/v1/namespaces/{ns}/secrets?limit=500&continue={cont}");
                let req = http::Request::get(uri)
                    .header(http::header::ACCEPT, PROTOBUF)
                    .body(Vec::new())
                    .unwrap();
                let (status, body) = send(&client, req).await;
                assert_eq!(status, 200, "LIST answered {status}");
                let unknown =
                    Unknown::decode(body.strip_prefix(MAGIC).expect("protobuf")).expect("Unknown");
                let list = RawList::decode(unknown.raw.unwrap_or_default().as_slice())
                    .expect("SecretList");
                for item in list.items {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                cont = list.metadata.and_then(|m| m.r#continue).unwrap_or_default();
                if cont.is_empty() {
                    return;
                }
            }
        })
    };

    let type_meta = TypeMeta {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
    };
    let results: Vec<u16> =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
            .map(|item| {
                let client = client.clone();
                let type_meta = type_meta.clone();
                async move {
                    let name = Named::decode(item.as_slice())
                        .ok()
                        .and_then(|n| n.metadata)
                        .and_then(|m| m.name)
                        .expect("item name");
                    let mut body = MAGIC.to_vec();
                    Unknown {
                        type_meta: Some(type_meta),
                        raw: Some(item),
                        content_encoding: None,
                        content_type: None,
                    }
                    .encode(&mut body)
                    .expect("encode");
                    let req = http::Request::put(format!("/api/v1/namespaces/{ns}/secrets/{name}"))
                        .header(http::header::CONTENT_TYPE, PROTOBUF)
                        .header(http::header::ACCEPT, PROTOBUF)
                        .body(body)
                        .unwrap();
                    send(&client, req).await.0
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    lister.await.expect("lister");
    let written = results.iter().filter(|s| **s == 200).count();
    let conflicts = results.iter().filter(|s| **s == 409).count();
    let failed = results.len() - written - conflicts;
    println!(
        "written {written} conflicts {conflicts} failed {failed} seconds {:.2}",
        t0.elapsed().as_secs_f64()
    );
    if failed + conflicts > 0 {
        std::process::exit(1);
    }
}
