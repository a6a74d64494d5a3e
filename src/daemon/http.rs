//! The HTTP listener of `daemon.metrics_listen`: `/metrics` ([`super::metrics`])
//! and the read-only API under `/api/` ([`super::api`]), served by `hyper`
//! (HTTP/1.1, RFC 9112) on a small tokio runtime of its own thread, off the
//! packet path. hyper parses the requests (no hand-written HTTP); each
//! connection is its own task, so a slow or stalled client never holds up a
//! Prometheus scrape: a request head must arrive within [`HEAD_TIMEOUT`],
//! a whole exchange within [`CONN_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] are open at once (more wait in the kernel's backlog).
//! The answers are built on tokio's blocking pool (the history index is
//! SQLite, the registry is rebuilt per scrape), never on the accept loop.

use crate::daemon::metrics::{OPENMETRICS, Sources, TEXT_004, render, to_text_004};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection may last, answer included (a client that
/// stops reading a large `/api/calls` answer is cut off here).
pub const CONN_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Threads building answers at once (SQLite queries, metric rendering).
const BLOCKING_THREADS: usize = 4;

/// Binds `addr` and serves on a thread of its own. A port already taken
/// fails here, at start (`AddrInUse`, naming the address): the
/// single-instance check of `callrec run`.
pub fn serve(addr: std::net::SocketAddr, src: Sources) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("callrec-http")
        .build()?;
    std::thread::Builder::new()
        .name("callrec-metrics".into())
        .spawn(move || rt.block_on(accept_loop(listener, Arc::new(src))))?;
    Ok(())
}

async fn accept_loop(listener: std::net::TcpListener, src: Arc<Sources>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener unusable");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let src = src.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, src.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONN_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

/// What one request is answered from: its method, target and headers.
struct Asked {
    method: Method,
    path: String,
    target: String,
    authorization: Option<String>,
    openmetrics: bool,
}

async fn handle<B>(
    req: Request<B>,
    src: Arc<Sources>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let h = req.headers();
    let asked = Asked {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string()),
        authorization: h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        openmetrics: h
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text")),
    };
    let answer = tokio::task::spawn_blocking(move || route(&asked, &src)).await;
    Ok(answer.unwrap_or_else(|_| {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "internal error\n".into(),
            &[],
        )
    }))
}

fn route(a: &Asked, src: &Sources) -> Response<Full<Bytes>> {
    if a.path.starts_with("/api/") {
        let r = crate::daemon::api::respond(
            a.method.as_str(),
            &a.target,
            a.authorization.as_deref(),
            src,
        );
        return reply(r.status, "application/json", r.body, &r.headers);
    }
    let get = a.method == Method::GET || a.method == Method::HEAD;
    match (get, a.path.as_str()) {
        (true, "/metrics") if a.openmetrics => reply(
            StatusCode::OK,
            OPENMETRICS,
            render(src, SystemTime::now()),
            &[],
        ),
        (true, "/metrics") => reply(
            StatusCode::OK,
            TEXT_004,
            to_text_004(&render(src, SystemTime::now())),
            &[],
        ),
        (false, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n".into(),
            &[("allow", "GET, HEAD".into())],
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".into(),
            &[],
        ),
    }
}

/// One whole answer (Content-Length; hyper leaves the body out for HEAD).
fn reply(
    status: StatusCode,
    ctype: &'static str,
    body: String,
    extra: &[(&'static str, String)],
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(*k, v);
        }
    }
    r
}
