//! Creates many Secrets through the apiserver, concurrently, for benchmarks and the demo:
//!
//!   cargo run --release --example seed -- KUBECONFIG NAMESPACE COUNT [SIZE_BYTES] [START]
//!
//! Names are `s-<number>`; each Secret holds SIZE_BYTES (default 1024) of random-looking data
//! under key `value`. Existing names are skipped (409), so seeding can grow a namespace.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: seed KUBECONFIG NAMESPACE COUNT [SIZE_BYTES] [START]");
        std::process::exit(2);
    }
    let kubeconfig = kube::config::Kubeconfig::read_from(&args[0]).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    let client = kube::Client::try_from(cfg).expect("client");
    let ns = args[1].clone();
    let count: usize = args[2].parse().expect("COUNT");
    let size: usize = args
        .get(3)
        .map(|s| s.parse().expect("SIZE_BYTES"))
        .unwrap_or(1024);
    let start: usize = args.get(4).map(|s| s.parse().expect("START")).unwrap_or(0);

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let body: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    let _ = namespaces.create(&PostParams::default(), &body).await;

    let api: Api<Secret> = Api::namespaced(client, &ns);
    let t0 = std::time::Instant::now();
    let results = futures::stream::iter(start..start + count)
        .map(|i| {
            let api = api.clone();
            // Printable data that does not compress to nothing: a counter mixed into a pattern.
            let data: String = (0..size)
                .map(|j| (b'a' + ((i * 31 + j * 7) % 26) as u8) as char)
                .collect();
            let body: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("s-{i:07}")}, "stringData": {"value": data}
            }))
            .unwrap();
            async move {
                match api.create(&PostParams::default(), &body).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    eprintln!(
        "seeded {count} secrets of {size} bytes in {:.1} s ({failed} failed)",
        t0.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
