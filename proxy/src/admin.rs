//! The admin listener: `/healthz` for orchestrators and `/metrics` for Prometheus.
//!
//! Separate from the agent listener so it can be bound (and firewalled) independently and so
//! that a scrape never goes through agent authentication. It serves nothing secret: metric
//! labels are bounded codes, never paths, tokens or values.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::spool::AuditPipeline;

/// Serve until `shutdown` turns true. Spool gauges are refreshed from `audit` at each scrape.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    audit: Option<AuditPipeline>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => break,
        };
        let metrics = metrics.clone();
        let audit = audit.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                let audit = audit.clone();
                async move {
                    if let Some(audit) = &audit {
                        metrics.observe_spool(&audit.stats());
                    }
                    Ok::<_, Infallible>(respond(&req, &metrics))
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "admin connection error");
                    }
                }
                _ = crate::stopped(&mut conn_shutdown) => {}
            }
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (
            StatusCode::OK,
            "application/json",
            Bytes::from_static(br#"{"status":"ok"}"#),
        ),
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            Bytes::from(metrics.render()),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from_static(br#"{"error":{"code":"not_found","message":"no such endpoint"}}"#),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
