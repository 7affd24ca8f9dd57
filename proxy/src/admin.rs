//! The admin listener: `/healthz` for orchestrators and `/metrics` for Prometheus.
//!
//! Separate from the agent listener so it can be bound (and firewalled) independently and so
//! that a scrape never goes through agent authentication. It serves nothing secret: metric
//! labels are bounded codes, never paths, tokens or values, and no label is taken from an
//! admin request (its method and path only pick one of three fixed answers).
//!
//! It is still a socket anyone who can reach it may hold, so it gets the same hygiene as the
//! control plane's listener: a cap on concurrent connections (in total and per client address,
//! checked on accept), a deadline for a request head, an idle deadline, and a bounded head.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agent_secret_core::api::ErrorCode;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::denial::Denial;
use crate::metrics::Metrics;
use crate::spool::AuditPipeline;

/// Connection limits of the admin listener. Scrapes and health checks are small, quick and few,
/// so the defaults are tight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminLimits {
    /// An HTTP/1.1 request head not complete by then closes the connection (also the idle
    /// time allowed between kept-alive requests).
    pub header_read_timeout: Duration,
    /// A connection that has not started a request for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request head in bytes (at least 8192, hyper's smallest read buffer).
    pub max_header_bytes: usize,
    /// Concurrent connections in total, and from one client address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 8192,
            max_connections: 64,
            max_connections_per_ip: 16,
        }
    }
}

/// Serve until `shutdown` turns true. Spool gauges are refreshed from `audit` at each scrape.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    audit: Option<AuditPipeline>,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, metrics, audit, shutdown, AdminLimits::default()).await;
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Metrics,
    audit: Option<AuditPipeline>,
    mut shutdown: watch::Receiver<bool>,
    limits: AdminLimits,
) {
    let slots = Slots::new(limits.max_connections, limits.max_connections_per_ip);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => break,
        };
        let Some(slot) = slots.take(peer.ip()) else {
            tracing::debug!(%peer, "admin connection refused: too many open");
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        let audit = audit.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let last_request = Arc::new(Mutex::new(Instant::now()));
            let seen = last_request.clone();
            let service = service_fn(move |req| {
                *lock(&seen) = Instant::now();
                let metrics = metrics.clone();
                let audit = audit.clone();
                async move {
                    if let Some(audit) = &audit {
                        metrics.observe_spool(&audit.stats());
                    }
                    Ok::<_, Infallible>(respond(&req, &metrics))
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "admin connection error");
                    }
                }
                () = idle(&last_request, limits.idle_timeout) => {
                    tracing::debug!(%peer, "admin connection idle; closing");
                }
                _ = crate::stopped(&mut conn_shutdown) => {}
            }
        });
    }
}

/// An `Instant` is written whole: a poisoned lock still holds a valid one.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves once no request has started for `timeout`. Admin answers are immediate, so a
/// connection with no new request is idle.
async fn idle(last_request: &Mutex<Instant>, timeout: Duration) {
    loop {
        let deadline = *lock(last_request) + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Concurrent connection counts; a slot is given back when its [`Slot`] drops, and an address
/// with no open connection is forgotten (the map is bounded by open sockets).
#[derive(Clone)]
struct Slots {
    max_total: usize,
    max_per_ip: usize,
    open: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
}

struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
}

impl Slots {
    fn new(max_total: usize, max_per_ip: usize) -> Slots {
        Slots {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            open: Arc::default(),
        }
    }

    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let mut guard = lock(&self.open);
        let (total, per_ip) = &mut *guard;
        let of_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.max_total || of_ip >= self.max_per_ip {
            return None;
        }
        *total += 1;
        per_ip.insert(ip, of_ip + 1);
        Some(Slot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = lock(&self.open);
        let (total, per_ip) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
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
            Denial::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such endpoint",
            )
            .body(),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};

    /// Liveness bound for the server to close what it should (not a performance check).
    const CLOSE_BOUND: Duration = Duration::from_secs(40);

    fn short_limits() -> AdminLimits {
        AdminLimits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_header_bytes: 8192,
            max_connections: 64,
            max_connections_per_ip: 64,
        }
    }

    async fn start(limits: AdminLimits) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve_with(
            listener,
            Metrics::new().unwrap(),
            None,
            stopped,
            limits,
        ));
        (addr, stop)
    }

    async fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(local.parse().unwrap(), 0))
            .unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Reads until EOF or reset; `false` if still open after `bound`.
    async fn closed_within(mut stream: TcpStream, bound: Duration) -> bool {
        let mut buf = [0u8; 1024];
        tokio::time::timeout(bound, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// The response head's status of one HTTP/1.1 request sent on a new connection.
    async fn status_of(local: &str, addr: SocketAddr, head: &str) -> Option<u16> {
        let mut stream = connect_from(local, addr).await;
        let _ = stream.write_all(head.as_bytes()).await;
        let mut response = Vec::new();
        let _ = tokio::time::timeout(CLOSE_BOUND, stream.read_to_end(&mut response)).await;
        let text = String::from_utf8_lossy(&response);
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";

    #[tokio::test]
    async fn admin_stalled_connections_do_not_block_a_scrape_and_are_closed() {
        let (addr, _stop) = start(short_limits()).await;
        let mut silent = Vec::new();
        let mut partial = Vec::new();
        for _ in 0..20 {
            silent.push(connect_from("127.0.0.1", addr).await);
            let mut slow = connect_from("127.0.0.1", addr).await;
            slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nX-Slow: ")
                .await
                .unwrap();
            partial.push(slow);
        }
        assert_eq!(status_of("127.0.0.1", addr, HEALTHZ).await, Some(200));
        let closed = futures::future::join_all(
            silent
                .into_iter()
                .chain(partial)
                .map(|s| closed_within(s, CLOSE_BOUND)),
        )
        .await;
        assert!(
            closed.iter().all(|c| *c),
            "{} stalled admin connections stayed open",
            closed.iter().filter(|c| !**c).count()
        );
    }

    #[tokio::test]
    async fn admin_connections_are_capped_per_address_and_in_total() {
        let (addr, _stop) = start(AdminLimits {
            max_connections: 4,
            max_connections_per_ip: 2,
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            ..short_limits()
        })
        .await;
        // Two from one address fill its share; a third is closed at once.
        let held_a = vec![
            connect_from("127.0.0.2", addr).await,
            connect_from("127.0.0.2", addr).await,
        ];
        // Accepts are served in order: once a request on a later connection is answered, the
        // earlier ones hold their slots.
        assert_eq!(status_of("127.0.0.4", addr, HEALTHZ).await, Some(200));
        let third = connect_from("127.0.0.2", addr).await;
        assert!(
            closed_within(third, CLOSE_BOUND).await,
            "a third connection from one address was kept"
        );
        // Another address is served, up to the total.
        let held_b = vec![
            connect_from("127.0.0.3", addr).await,
            connect_from("127.0.0.3", addr).await,
        ];
        assert_eq!(status_of("127.0.0.5", addr, HEALTHZ).await, None);
        drop(held_b);
        let mut served = None;
        for _ in 0..100 {
            served = status_of("127.0.0.5", addr, HEALTHZ).await;
            if served.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            served,
            Some(200),
            "closed connections give their slots back"
        );
        drop(held_a);
    }

    #[tokio::test]
    async fn admin_refuses_an_oversized_request_head() {
        let (addr, _stop) = start(short_limits()).await;
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        assert_eq!(status_of("127.0.0.1", addr, &head).await, Some(431));
    }
}
