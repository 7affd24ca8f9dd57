//! Runs the API router over TLS 1.3 with connection hygiene and graceful shutdown.
//!
//! axum's `serve` has no TLS, so connections are accepted here, wrapped with tokio-rustls and
//! served by hyper-util; each connection's peer address is attached to its requests for the
//! audit log and the per-address limits.
//!
//! A client must not be able to hold the server with connections that do nothing (slowloris):
//! connections are capped per client address and in total before the handshake; a handshake,
//! an HTTP/1.1 request head and an idle connection each have a deadline; request heads are
//! bounded in size. All of it comes from `[server]` (`App::limits`).

mod activity;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use self::activity::{Activity, Tracked};
use crate::api::{self, extract::PeerAddr};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::service::App;

/// In-flight requests get this long to finish after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection told to close (GOAWAY on HTTP/2) is dropped if it has not after this.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive: a ping after this much silence, and the connection is closed if the
/// ping is not answered in time (a vanished peer holding a watch stream).
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = api::app(app.clone());
    let acceptor = TlsAcceptor::from(tls);
    let settings = Arc::new(app.limits.server.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` yields `None` once all have ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let janitor = tokio::spawn(crate::service::limits::janitor(app.clone()));
    let activation = crate::service::activation::spawn(app.clone());
    let expiry = crate::service::expiry::spawn(app.clone());
    let checkpoints = crate::service::checkpoints::spawn(app.clone());
    let sinks = crate::service::siem::spawn(app.clone());
    let alerts = crate::service::alerts::spawn(app.clone());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match app.limits.connections.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                app.metrics
                    .connections_refused
                    .with_label_values(&[refusal.as_str()])
                    .inc();
                tracing::debug!(%peer, reason = refusal.as_str(), "connection refused");
                drop(tcp);
                continue;
            }
        };
        let conn = Connection {
            peer,
            router: router.clone(),
            settings: settings.clone(),
            metrics: app.metrics.clone(),
            stop: stop_rx.clone(),
        };
        let acceptor = acceptor.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let _permit = permit;
            conn.run(acceptor, tcp).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing");
    }
    janitor.abort();
    activation.abort();
    expiry.abort();
    checkpoints.abort();
    sinks.iter().for_each(|s| s.abort());
    alerts.iter().for_each(|a| a.abort());
    // Failures counted but not yet written still reach the audit log.
    app.limits
        .auth_failures
        .flush(app.store.as_ref(), true)
        .await;
    Ok(())
}

/// Resolves once shutdown is requested (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One accepted connection and what it needs.
struct Connection {
    peer: SocketAddr,
    router: axum::Router,
    settings: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, acceptor: TlsAcceptor, tcp: TcpStream) {
        let mut stop = self.stop.clone();
        let handshake_timeout = Duration::from_secs(self.settings.tls_handshake_timeout_seconds);
        let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
        let tls = tokio::select! {
            done = handshake => match done {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, peer = %self.peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.timed_out("tls_handshake_timeout");
                    return;
                }
            },
            () = stopped(&mut stop) => return,
        };
        self.serve_http(tls).await;
    }

    async fn serve_http(self, tls: tokio_rustls::server::TlsStream<TcpStream>) {
        let mut stop = self.stop.clone();
        let settings = self.settings.clone();
        let activity = Activity::new();
        let peer = self.peer;
        let router = self.router.clone();
        let tracker = activity.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                // Held until the response body is done (a watch stream stays in flight).
                let in_flight = tracker.begin();
                let router = router.clone();
                async move {
                    let response = router.oneshot(req.map(axum::body::Body::new)).await?;
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| Tracked::new(body, in_flight)),
                    )
                }
            });
        let header_bytes = settings.max_header_bytes;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(settings.header_read_timeout_seconds))
            .max_buf_size(header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
        tokio::pin!(conn);
        let idle = activity.idle_for(Duration::from_secs(settings.idle_timeout_seconds));
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = idle => {
                self.timed_out("idle_timeout");
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await.unwrap_or(Ok(()))
            }
            () = stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut()).await.unwrap_or(Ok(()))
            }
        };
        if let Err(e) = result {
            let timed_out = e
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout);
            if timed_out {
                self.timed_out("read_timeout");
            } else {
                tracing::debug!(error = %e, peer = %self.peer, "connection ended with an error");
            }
        }
    }

    fn timed_out(&self, reason: &'static str) {
        tracing::debug!(peer = %self.peer, reason, "closing a slow or idle connection");
        self.metrics
            .connections_timed_out
            .with_label_values(&[reason])
            .inc();
    }
}
