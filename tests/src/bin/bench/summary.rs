//! The run's one summary table (issue 16, "Done means"): every headline figure on one line
//! each, with its ratio to the pingora floor and to nginx measured in the same run, so a
//! reader need not cross-reference the detailed tables above it.
//!
//! Ratios are value ÷ baseline of the same kind: for req/s higher is better, for CPU µs,
//! milliseconds added and MiB lower is better. A figure without a like baseline (resolve,
//! caches off against the floor) shows `-`.

use serde_json::{json, Value};

/// One line: what, its value and unit, and the floor's and nginx's value of the same kind.
struct Line {
    figure: String,
    value: f64,
    unit: &'static str,
    floor: f64,
    nginx: f64,
}

/// Req/s and CPU µs per request of a `wrk` row, by (group, target, conns).
pub type HttpFigure<'a> = &'a dyn Fn(&str, &str, u32) -> Option<(f64, Option<f64>)>;

/// The figures the detailed tables hold, by name.
pub struct Figures<'a> {
    pub http: HttpFigure<'a>,
    /// The fixed-rate rows as `open_loop::report` returns them.
    pub latency: &'a [Value],
    pub rss: &'a [Value],
    pub resolve: &'a [Value],
    /// The connection count the throughput figures are read at.
    pub conns: u32,
}

/// Prints the summary table; returns its lines as JSON.
pub fn print(f: &Figures<'_>) -> Vec<Value> {
    let lines = lines(f);
    println!(
        "\nSummary ({} connections for throughput; ×floor and ×nginx divide by their figure of the same kind)",
        f.conns
    );
    println!(
        "  {:<52} {:>10} {:<6} {:>8} {:>8}",
        "figure", "value", "unit", "×floor", "×nginx"
    );
    for l in &lines {
        println!(
            "  {:<52} {:>10} {:<6} {:>8} {:>8}",
            l.figure,
            shown(l.value),
            l.unit,
            shown_ratio(l.value, l.floor),
            shown_ratio(l.value, l.nginx)
        );
    }
    lines
        .iter()
        .map(|l| {
            json!({
                "figure": l.figure,
                "value": finite(l.value),
                "unit": l.unit,
                "vs_floor": finite(l.value / l.floor),
                "vs_nginx": finite(l.value / l.nginx),
            })
        })
        .collect()
}

fn lines(f: &Figures<'_>) -> Vec<Line> {
    let c = f.conns;
    let rps = |group: &str, target: &str| (f.http)(group, target, c).map_or(f64::NAN, |r| r.0);
    let cpu = |group: &str, target: &str| {
        (f.http)(group, target, c)
            .and_then(|r| r.1)
            .unwrap_or(f64::NAN)
    };
    let mut lines = Vec::new();
    let mut throughput = |figure: &str, group: &str, target: &str| {
        lines.push(Line {
            figure: format!("{figure}, {c} conns"),
            value: rps(group, target),
            unit: "req/s",
            floor: rps(group, "pingora floor"),
            nginx: rps(group, "nginx"),
        });
    };
    throughput("direct, small", "small", "direct");
    throughput("nginx, small", "small", "nginx");
    throughput("pingora floor, small", "small", "pingora floor");
    throughput("sidecar warm, small", "small", "sidecar hot");
    throughput(
        "sidecar caches off (SQLite), small",
        "small",
        "sidecar caches off",
    );
    throughput(
        "sidecar caches off (PostgreSQL), small",
        "small",
        "sidecar caches off (PostgreSQL)",
    );
    throughput("sidecar scrub on, 1 MiB", "1mib", "sidecar scrub full");
    throughput(
        "sidecar scrub off (headers), 1 MiB",
        "1mib",
        "sidecar scrub headers",
    );
    for (figure, target) in [
        ("CPU per request: nginx, small", "nginx"),
        ("CPU per request: pingora floor, small", "pingora floor"),
        ("CPU per request: sidecar warm, small", "sidecar hot"),
    ] {
        lines.push(Line {
            figure: figure.to_owned(),
            value: cpu("small", target),
            unit: "µs",
            floor: cpu("small", "pingora floor"),
            nginx: cpu("small", "nginx"),
        });
    }
    for backend in ["sqlite", "postgres"] {
        // The largest seed at the most connections measured: the hardest case.
        let best = f
            .resolve
            .iter()
            .filter(|v| v["backend"] == backend)
            .max_by_key(|v| (v["conns"].as_u64(), v["seeded"]["tokens"].as_i64()));
        if let Some(v) = best {
            lines.push(Line {
                figure: format!(
                    "resolve ({backend}), {} tokens, {} conns",
                    v["seeded"]["tokens"], v["conns"]
                ),
                value: v["result"]["rps"].as_f64().unwrap_or(f64::NAN),
                unit: "req/s",
                floor: f64::NAN,
                nginx: f64::NAN,
            });
        }
    }
    let rate = f
        .latency
        .first()
        .and_then(|v| v["rate"].as_f64())
        .unwrap_or(f64::NAN);
    lines.extend(compared(
        f.latency,
        "added_p99_ms",
        "ms",
        ("pingora floor", "nginx"),
        [
            ("nginx", "nginx"),
            ("pingora floor", "pingora floor"),
            ("sidecar warm", "sidecar hot"),
        ]
        .map(|(name, target)| (format!("p99 added at {rate:.0} req/s: {name}"), target)),
    ));
    let idle = f
        .rss
        .first()
        .map_or(Value::Null, |v| v["idle_connections"].clone());
    lines.extend(compared(
        f.rss,
        "rss_idle_mib",
        "MiB",
        ("floor", "nginx"),
        ["nginx", "floor", "sidecar"].map(|t| (format!("RSS, {idle} idle conns: {t}"), t)),
    ));
    // A scenario `--only` left out has nothing to say.
    lines.retain(|l| !l.value.is_nan());
    lines
}

/// One line per (figure, target): `key` of that target's row in `rows`, against the same key
/// of the rows named by `baselines` (floor, nginx).
fn compared<const N: usize>(
    rows: &[Value],
    key: &str,
    unit: &'static str,
    baselines: (&str, &str),
    targets: [(String, &str); N],
) -> Vec<Line> {
    let of = |target: &str| {
        rows.iter()
            .find(|v| v["target"] == target)
            .and_then(|v| v[key].as_f64())
            .unwrap_or(f64::NAN)
    };
    targets
        .into_iter()
        .map(|(figure, target)| Line {
            figure,
            value: of(target),
            unit,
            floor: of(baselines.0),
            nginx: of(baselines.1),
        })
        .collect()
}

fn shown(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn shown_ratio(v: f64, base: f64) -> String {
    let r = v / base;
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "-".to_owned()
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}
