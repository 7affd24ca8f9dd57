//! Driving `wrk` (pinned with taskset) and reading its summary.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// One wrk run's summary.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Non-2xx/3xx responses plus socket errors: a run with errors measured something else.
    pub errors: u64,
}

impl Run {
    pub fn json(&self) -> Value {
        json!({"rps": self.rps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
               "requests": self.requests, "errors": self.errors})
    }
}

pub struct Load<'a> {
    pub url: &'a str,
    pub conns: u32,
    pub seconds: f64,
    pub headers: &'a [String],
    pub script: Option<&'a Path>,
    pub cpu: Option<u32>,
}

pub fn run(load: &Load) -> Run {
    let mut cmd = match load.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    // wrk's duration is whole seconds; sub-second smoke runs round up to 1 s.
    let secs = load.seconds.ceil().max(1.0) as u64;
    cmd.args([
        "-t1",
        &format!("-c{}", load.conns),
        &format!("-d{secs}s"),
        "--latency",
        "--timeout",
        "10s",
    ]);
    for h in load.headers {
        cmd.args(["-H", h]);
    }
    if let Some(script) = load.script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(load.url);
    let out = cmd.output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse(&text)
}

pub fn parse(text: &str) -> Run {
    let mut run = Run::default();
    let mut in_dist = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            let mut f = t.split_whitespace();
            match (f.next(), f.next()) {
                (Some("50%"), Some(v)) => run.p50_ms = ms(v),
                (Some("99%"), Some(v)) => {
                    run.p99_ms = ms(v);
                    in_dist = false;
                }
                (Some(p), Some(_)) if p.ends_with('%') => {}
                _ => in_dist = false,
            }
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().unwrap_or(0.0);
        }
        if t.contains(" requests in ") {
            run.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
        if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            run.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(v) = t.strip_prefix("Socket errors:") {
            run.errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    run
}

/// wrk prints `812.00us`, `1.23ms`, `2.00s`, `1.5m`.
fn ms(v: &str) -> f64 {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}
