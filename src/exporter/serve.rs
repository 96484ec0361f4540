//! `/metrics` and `/healthz` over HTTP/1 (hyper, already in the dependency tree through kube
//! and tonic), on a thread of their own: a scrape is answered from the page in memory and never
//! waits for a scan, however busy the scan keeps the other threads.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;

use super::ExporterError;
use super::metrics::CONTENT_TYPE;

/// The page served on `/metrics`: rendered once per scan, cloned (a reference count) per
/// scrape.
#[derive(Debug, Default)]
pub struct Page {
    body: RwLock<Bytes>,
}

impl Page {
    /// Replaces the page.
    pub fn set(&self, text: String) {
        let mut b = self.body.write().unwrap_or_else(|e| e.into_inner());
        *b = Bytes::from(text);
    }

    /// The page now.
    pub fn get(&self) -> Bytes {
        self.body.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn respond(page: &Page, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (StatusCode::OK, CONTENT_TYPE, page.get()),
        (&Method::GET | &Method::HEAD, "/healthz") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"ok\n"),
        ),
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found: try /metrics or /healthz\n"),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"only GET\n"),
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Binds `listen` (`127.0.0.1:9725`, `:9725`, `[::1]:9725`) now, so a taken port is an error
/// of the command, and serves `page` on a thread of its own. Returns the bound address.
pub fn start(listen: &str, page: Arc<Page>) -> Result<SocketAddr, ExporterError> {
    let addr = if listen.starts_with(':') {
        format!("0.0.0.0{listen}")
    } else {
        listen.to_string()
    };
    let err = |source| ExporterError::Listen {
        addr: listen.to_string(),
        source,
    };
    let std_listener = std::net::TcpListener::bind(&addr).map_err(err)?;
    std_listener.set_nonblocking(true).map_err(err)?;
    let bound = std_listener.local_addr().map_err(err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ExporterError::Server)?;
    std::thread::Builder::new()
        .name("atrest-metrics".into())
        .spawn(move || runtime.block_on(accept_loop(std_listener, page)))
        .map_err(ExporterError::Server)?;
    Ok(bound)
}

async fn accept_loop(std_listener: std::net::TcpListener, page: Arc<Page>) {
    let listener = match tokio::net::TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics listener: {e}");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: say so, keep serving.
                tracing::warn!("metrics accept: {e}");
                continue;
            }
        };
        let page = Arc::clone(&page);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = respond(&page, &req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}
