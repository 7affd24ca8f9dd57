//! Measurements wrk cannot make: SSE time-to-first-event and resident memory with many idle
//! keep-alive connections. Plain HTTP/1.1 over raw sockets, so the client adds nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn request(path: &str, headers: &[String]) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Milliseconds from writing the request (on a fresh connection) to reading `data: first`,
/// `n` times in sequence; sorted.
pub async fn sse_ttfe(addr: SocketAddr, path: &str, headers: &[String], n: usize) -> Vec<f64> {
    let req = request(path, headers);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let start = Instant::now();
        if tcp.write_all(&req).await.is_err() {
            continue;
        }
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        let found = loop {
            match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break false,
                Ok(Ok(k)) => {
                    buf.extend_from_slice(&chunk[..k]);
                    if buf.windows(11).any(|w| w == b"data: first") {
                        break true;
                    }
                }
            }
        };
        if found {
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(f64::total_cmp);
    samples
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Opens `n` connections, completes one request on each (so each is a real keep-alive
/// connection that went through the proxy), and returns them, still open. Also returns how
/// many requests got a 200.
pub async fn idle_connections(
    addr: SocketAddr,
    path: &str,
    headers: &[String],
    n: usize,
) -> (Vec<TcpStream>, usize) {
    let req = request(path, headers);
    let mut set = tokio::task::JoinSet::new();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..n {
        let req = req.clone();
        let gate = gate.clone();
        set.spawn(async move {
            let _permit = gate.acquire().await.ok()?;
            let mut tcp = TcpStream::connect(addr).await.ok()?;
            tcp.write_all(&req).await.ok()?;
            let ok = read_response(&mut tcp).await?;
            Some((tcp, ok))
        });
    }
    let mut conns = Vec::with_capacity(n);
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        if let Ok(Some((tcp, good))) = r {
            ok += usize::from(good);
            conns.push(tcp);
        }
    }
    (conns, ok)
}

/// Reads one Content-Length response; `Some(status == 200)`.
async fn read_response(tcp: &mut TcpStream) -> Option<bool> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let k = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if k == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..k]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(head.starts_with("http/1.1 200"));
            }
        }
    }
}

/// VmRSS of `pid` in MiB.
/// CPU time (user + system, in clock ticks) of process `pid` and its child processes (nginx's
/// workers); threads are counted in their process.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let one = |pid: &str| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the `(comm)`, which may itself hold spaces: state is field 3, utime 14.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut total = one(&pid.to_string())?;
    for child in children.split_whitespace() {
        total += one(child).unwrap_or(0);
    }
    Some(total)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
