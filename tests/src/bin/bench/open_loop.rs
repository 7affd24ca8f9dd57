//! Latency at a fixed request rate (issue 16, item 5): an open-loop load generator, so the
//! proxy's latency is measured at a load a user would run, not only at saturation.
//!
//! wrk is closed-loop: each connection sends its next request when the last one is answered,
//! so a slow proxy is sent less and its tail hides ("coordinated omission"). Here request `i` is
//! due at `start + i / rate` whatever happened before (evenly spaced, as wrk2 paces). A pacer
//! thread releases each request at its due time; the first free keep-alive connection sends
//! it, and its latency is timed from its release, so a request that had to wait for a free
//! connection counts that wait.
//!
//! The pacer is an OS thread sleeping to each due time (Linux timers: microseconds late, the
//! default 50 µs timer slack at most), not a tokio timer: tokio's timer wheel fires in
//! millisecond ticks, so at 5,000 req/s it released the ~5 requests due in each millisecond
//! as one burst, and every proxy's p99 then held the queueing of that burst (bench/README.md
//! "session 15").
//!
//! Plain hyper HTTP/1.1 client connections (chunked bodies are read whole), on the runner's
//! current-thread runtime, on the load core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::probes::percentile;

/// What one fixed-rate run measured; latencies in milliseconds.
pub struct Latency {
    pub rate: f64,
    pub conns: usize,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Seconds the run (or the pooled runs) took.
    elapsed: f64,
    /// Sorted latencies of the successful requests.
    samples: Vec<f64>,
}

impl Latency {
    /// Pool another run of the same target into this one.
    pub fn absorb(&mut self, other: Latency) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.samples.extend(other.samples);
        self.samples.sort_by(f64::total_cmp);
    }

    /// Requests completed per second (falls short of `rate` when the target cannot keep up).
    pub fn achieved(&self) -> f64 {
        self.ok as f64 / self.elapsed
    }

    pub fn p(&self, q: f64) -> f64 {
        percentile(&self.samples, q)
    }

    pub fn json(&self) -> Value {
        json!({
            "rate": self.rate,
            "conns": self.conns,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "achieved_per_second": self.achieved(),
            "p50_ms": self.p(0.5),
            "p99_ms": self.p(0.99),
            "p999_ms": self.p(0.999),
            "max_ms": self.p(1.0),
        })
    }
}

/// `rate` GET requests per second of `path` at `addr` for `seconds`, over `conns`
/// connections, every request with `headers` ("Name: value").
pub async fn run(
    addr: SocketAddr,
    path: &str,
    headers: &[String],
    rate: f64,
    seconds: f64,
    conns: usize,
) -> Latency {
    let total = (rate * seconds).round() as u64;
    let request = Arc::new(build_request(path, headers));
    let start = Instant::now() + Duration::from_millis(20);
    let (release, released) = tokio::sync::mpsc::unbounded_channel();
    let pacer = std::thread::spawn(move || pace(release, start, rate, total));
    let released = Arc::new(tokio::sync::Mutex::new(released));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns {
        workers.spawn(worker(addr, request.clone(), released.clone()));
    }
    let (mut samples, mut errors) = (Vec::with_capacity(total as usize), 0);
    while let Some(done) = workers.join_next().await {
        if let Ok((mine, failed)) = done {
            samples.extend(mine);
            errors += failed;
        }
    }
    let _ = pacer.join();
    let elapsed = start.elapsed().as_secs_f64().max(f64::EPSILON);
    samples.sort_by(f64::total_cmp);
    Latency {
        rate,
        conns,
        sent: samples.len() as u64 + errors,
        ok: samples.len() as u64,
        errors,
        elapsed,
        samples,
    }
}

fn build_request(path: &str, headers: &[String]) -> http::Request<Empty<Bytes>> {
    let mut builder = http::Request::get(path).header("host", "127.0.0.1");
    for h in headers {
        if let Some((name, value)) = h.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    builder.body(Empty::new()).expect("a valid request")
}

fn clone_request(r: &http::Request<Empty<Bytes>>) -> http::Request<Empty<Bytes>> {
    let mut copy = http::Request::new(Empty::new());
    *copy.method_mut() = r.method().clone();
    *copy.uri_mut() = r.uri().clone();
    *copy.headers_mut() = r.headers().clone();
    copy
}

/// Releases request `i` at `start + i / rate` (see the module docs); each release carries
/// the instant it happened, which the request is timed from.
fn pace(
    release: tokio::sync::mpsc::UnboundedSender<Instant>,
    start: Instant,
    rate: f64,
    total: u64,
) {
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if release.send(Instant::now()).is_err() {
            return;
        }
    }
}

type Released = Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>>;

/// One connection's share: (latencies of its successful requests, how many failed). A failed
/// request (an error status, a socket error, a timeout) drops the connection; the next
/// request reconnects.
async fn worker(
    addr: SocketAddr,
    request: Arc<http::Request<Empty<Bytes>>>,
    released: Released,
) -> (Vec<f64>, u64) {
    let (mut samples, mut errors) = (Vec::new(), 0);
    let mut sender = None;
    loop {
        // The lock is held only while waiting for the next release: a busy connection
        // leaves it to the free ones.
        let Some(timed_from) = released.lock().await.recv().await else {
            break;
        };
        if sender.is_none() {
            sender = connect(addr).await;
        }
        let Some(conn) = sender.as_mut() else {
            errors += 1;
            continue;
        };
        match send(conn, clone_request(&request)).await {
            Some(true) => samples.push(timed_from.elapsed().as_secs_f64() * 1000.0),
            _ => {
                errors += 1;
                sender = None;
            }
        }
    }
    (samples, errors)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// `Some(status is 2xx)` once the whole body is read (within 10 s); `None` on a connection
/// error or a timeout.
async fn send(sender: &mut Sender, request: http::Request<Empty<Bytes>>) -> Option<bool> {
    let exchange = async {
        sender.ready().await.ok()?;
        let response = sender.send_request(request).await.ok()?;
        let ok = response.status().is_success();
        response.into_body().collect().await.ok()?;
        Some(ok)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// Prints the fixed-rate table (each target's percentiles, and what it adds over `direct`);
/// returns the rows as JSON and the sidecar's added p99 in milliseconds (NaN when either was
/// not measured).
pub fn report(runs: &[(String, Latency)]) -> (Vec<Value>, f64) {
    if runs.is_empty() {
        return (Vec::new(), f64::NAN);
    }
    let direct = runs.iter().find(|(t, _)| t == "direct").map(|(_, l)| l);
    let added = |l: &Latency, q: f64| direct.map_or(f64::NAN, |d| l.p(q) - d.p(q));
    println!(
        "\nLatency at a fixed rate (open loop, evenly paced: timed from when each request was released; + is over direct)"
    );
    println!(
        "  {:<24} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "target",
        "req/s",
        "achieved",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "+p50",
        "+p99",
        "+p999",
        "errors"
    );
    let rows = runs
        .iter()
        .map(|(target, l)| {
            println!(
                "  {:<24} {:>7.0} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>6}",
                target,
                l.rate,
                l.achieved(),
                l.p(0.5),
                l.p(0.99),
                l.p(0.999),
                added(l, 0.5),
                added(l, 0.99),
                added(l, 0.999),
                l.errors
            );
            let mut v = l.json();
            v["target"] = json!(target);
            v["added_p99_ms"] = json!(added(l, 0.99));
            v
        })
        .collect();
    let sidecar = runs
        .iter()
        .find(|(t, _)| t == "sidecar hot")
        .map_or(f64::NAN, |(_, l)| added(l, 0.99));
    (rows, sidecar)
}
