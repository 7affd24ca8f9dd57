//! `bench`: the side-by-side benchmark of issue 4 (run it with `bash bench/run [--smoke]`).
//!
//! `bench run` starts a fast upstream, nginx (a reverse proxy adding a static Authorization
//! header), the control plane (SQLite, and PostgreSQL when reachable) and the release sidecar,
//! each as its own process, drives every target with the same `wrk` settings and prints one
//! table of ratios against the baselines measured in the same run; `bench/README.md` says what
//! each number means. With two or more cores the component under test (nginx, the sidecar, or
//! the control plane for resolve) runs alone on core 0 and everything else (wrk, upstream,
//! the other services, this runner) on core 1.
//!
//! `bench upstream` and `bench control-plane` are the runner's child processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod control_plane;
mod open_loop;
mod probes;
mod summary;
mod upstream;
mod wrk;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use wrk::{Load, Run};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("upstream") => upstream::run(),
        Some("control-plane") => control_plane::run(control_plane::Args {
            dir: PathBuf::from(flag(&args, "--dir").expect("--dir")),
            db_url: flag(&args, "--db"),
            hosts: flag(&args, "--hosts")
                .expect("--hosts")
                .split(',')
                .map(str::to_owned)
                .collect(),
            real_tokens: flag(&args, "--real-tokens").map_or(100, |v| v.parse().expect("n")),
        }),
        Some("run") => run(Settings::from_args(&args)),
        _ => {
            eprintln!(
                "usage: bench run [--smoke] [--seconds N] [--conns 1,16,64] [--only hot,cold,sse,rss,resolve] [--out FILE]"
            );
            std::process::exit(2);
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

struct Settings {
    smoke: bool,
    seconds: f64,
    conns: Vec<u32>,
    out: PathBuf,
    pin: bool,
    sse_samples: usize,
    idle_conns: usize,
    /// The fixed request rate of the latency scenario (`--rate`), and its connections.
    rate: f64,
    rate_conns: usize,
    real_tokens: usize,
    /// (tokens, secrets) totals per resolve step, per backend.
    sqlite_seeds: Vec<(i64, i64)>,
    pg_seeds: Vec<(i64, i64)>,
    /// The scenarios to run (`--only`; all by default).
    only: Vec<Scenario>,
    /// `BENCH_PROXY_BIN`: the sidecar binary under test, instead of the one built next to
    /// this runner (e.g. a clean build of a commit while the tree has other edits).
    proxy: Option<PathBuf>,
    /// `BENCH_BASELINE_PROXY`: a second sidecar binary (an older build) measured next to the
    /// new one on the warm rows, same URLs and connection counts.
    baseline: Option<PathBuf>,
    /// `BENCH_BASELINE_AUDIT`: lines added to the baseline sidecar's `[audit]` section (e.g.
    /// `flush_interval_ms = 60000`), to measure a setting against the default side by side.
    baseline_audit: String,
}

/// A group of measurements `--only` can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Warm sidecar rows (small and 1 MiB), with direct and nginx for scale.
    Hot,
    /// The caches-off sidecars (every request resolves), SQLite and PostgreSQL.
    Cold,
    /// Latency at a fixed request rate (open loop).
    Latency,
    Sse,
    Rss,
    Resolve,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Hot,
        Scenario::Cold,
        Scenario::Latency,
        Scenario::Sse,
        Scenario::Rss,
        Scenario::Resolve,
    ];

    fn parse(name: &str) -> Scenario {
        match name {
            "hot" => Scenario::Hot,
            "cold" => Scenario::Cold,
            "latency" => Scenario::Latency,
            "sse" => Scenario::Sse,
            "rss" => Scenario::Rss,
            "resolve" => Scenario::Resolve,
            other => {
                panic!("--only: unknown scenario {other:?} (hot, cold, latency, sse, rss, resolve)")
            }
        }
    }
}

impl Settings {
    fn from_args(args: &[String]) -> Settings {
        let smoke = args.iter().any(|a| a == "--smoke");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate is in the workspace");
        let root = workspace.join("bench/results");
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        Settings {
            smoke,
            seconds: flag(args, "--seconds")
                .map(|s| s.parse().expect("--seconds"))
                .unwrap_or(if smoke { 1.0 } else { 10.0 }),
            conns: flag(args, "--conns")
                .map(|s| s.split(',').map(|c| c.parse().expect("--conns")).collect())
                .unwrap_or_else(|| vec![1, 64, 512]),
            out: flag(args, "--out").map_or_else(
                || root.join(format!("{stamp}{}.json", if smoke { "-smoke" } else { "" })),
                PathBuf::from,
            ),
            // `bench/run` passes `--pin` when it has two cores; it then runs this process on
            // core 1 already, so the core count must come from the script.
            pin: args.iter().any(|a| a == "--pin")
                && Command::new("taskset").arg("-V").output().is_ok(),
            sse_samples: if smoke { 20 } else { 200 },
            idle_conns: if smoke { 1_000 } else { 10_000 },
            rate: flag(args, "--rate")
                .map(|s| s.parse().expect("--rate"))
                .unwrap_or(if smoke { 1_000.0 } else { 5_000.0 }),
            rate_conns: 64,
            real_tokens: if smoke { 20 } else { 1000 },
            sqlite_seeds: if smoke {
                vec![(1_000, 100)]
            } else {
                vec![(1_000, 100), (20_000, 2_000)]
            },
            pg_seeds: if smoke {
                vec![(1_000, 100)]
            } else {
                vec![(1_000, 100), (100_000, 10_000)]
            },
            only: flag(args, "--only").map_or_else(
                || Scenario::ALL.to_vec(),
                |s| s.split(',').map(Scenario::parse).collect(),
            ),
            proxy: env_path("BENCH_PROXY_BIN"),
            baseline: env_path("BENCH_BASELINE_PROXY"),
            baseline_audit: std::env::var("BENCH_BASELINE_AUDIT")
                .unwrap_or_default()
                .replace("\\n", "\n"),
        }
    }

    fn runs(&self, scenario: Scenario) -> bool {
        self.only.contains(&scenario)
    }

    /// `taskset -c CPU program` when pinning, else `program`.
    fn command(&self, cpu: u32, program: &Path) -> Command {
        if self.pin {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn load_cpu(&self) -> Option<u32> {
        self.pin.then_some(LOAD_CPU)
    }
}

/// The component under test runs here; wrk, the upstream and the rest on `LOAD_CPU`.
const SUT_CPU: u32 = 0;
const LOAD_CPU: u32 = 1;

/// A child process, killed (by its own pid) when dropped.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let log = std::fs::File::create(log).expect("log file");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            stdin: child.stdin.take(),
            stdout: child.stdout.take().map(BufReader::new),
            child,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .as_mut()
            .expect("stdout")
            .read_line(&mut line)
            .expect("read child stdout");
        assert!(!line.is_empty(), "child exited early (see its log)");
        line.trim().to_owned()
    }

    fn send(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write child stdin");
        stdin.flush().expect("flush");
        self.line()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    out
}

/// What `bench control-plane` printed.
struct Stack {
    proc: Proc,
    info: Value,
    backend: &'static str,
}

impl Stack {
    fn token(&self) -> &str {
        self.info["tokens"][0].as_str().expect("token")
    }
}

struct Sidecar {
    proc: Proc,
    port: u16,
}

struct Env {
    s: Settings,
    dir: tempfile::TempDir,
    exe: PathBuf,
    hosts: Vec<String>,
}

impl Env {
    fn control_plane(&self, name: &str, backend: &'static str, db: Option<&str>) -> Stack {
        let mut cmd = self.s.command(LOAD_CPU, &self.exe);
        cmd.args(["control-plane", "--dir"])
            .arg(self.dir.path().join(name))
            .args(["--hosts", &self.hosts.join(",")])
            .args(["--real-tokens", &self.s.real_tokens.to_string()]);
        if let Some(db) = db {
            cmd.args(["--db", db]);
        }
        let mut proc = Proc::spawn(cmd, &self.dir.path().join(format!("{name}.log")));
        let info: Value = serde_json::from_str(&proc.line()).expect("control-plane JSON");
        Stack {
            proc,
            info,
            backend,
        }
    }

    /// The sidecar under test: `BENCH_PROXY_BIN`, else the one built next to this runner.
    fn proxy_bin(&self) -> PathBuf {
        self.s
            .proxy
            .clone()
            .unwrap_or_else(|| self.exe.with_file_name("agent-secret-proxy"))
    }

    /// Whether the sidecar under test takes `[rate_limits]`: the one built with this runner
    /// does; a `BENCH_PROXY_BIN` is asked (see [`knows_rate_limits`]).
    fn proxy_rate_limits(&self) -> bool {
        self.s.proxy.as_deref().is_none_or(knows_rate_limits)
    }

    /// Starts `bin` (the sidecar) in route mode, with a never-tripping `[rate_limits]` section
    /// when `rate_limits` (a build that knows it); returns once its watch stream is connected.
    #[allow(clippy::too_many_arguments)]
    fn sidecar(
        &self,
        name: &str,
        bin: &Path,
        rate_limits: bool,
        stack: &Stack,
        ports: (u16, u16),
        extra: &str,
    ) -> Sidecar {
        let dir = self.dir.path();
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&key_file, stack.info["sidecar_key"].as_str().expect("key"))
            .expect("key file");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .expect("key file mode");
        let (port, admin) = (free_port(), free_port());
        let config = format!(
            r#"listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
shutdown_grace_seconds = 1

[control_plane]
url = "{url}"
ca_file = {ca}
sidecar_key_file = {key:?}

[kms]
backend = "local"
keyring = {keyring}
master_key_file = {master}

{rate_limits}
[audit]
spool_path = {spool:?}
{extra}
[[hosts]]
name = "127.0.0.1:{a}"
plaintext = true
allow_private = true
pass_through = true
scrub = "full"

[[hosts]]
name = "127.0.0.1:{b}"
plaintext = true
allow_private = true
pass_through = true
scrub = "headers"

[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:{a}/"

[[routes]]
prefix = "/b/"
upstream = "http://127.0.0.1:{b}/"
"#,
            url = stack.info["url"].as_str().expect("url"),
            ca = stack.info["ca_file"],
            key = key_file,
            keyring = stack.info["keyring"],
            master = stack.info["master_key_file"],
            spool = dir.join(format!("{name}-spool.jsonl")),
            rate_limits = if rate_limits { RATE_LIMITS } else { "" },
            a = ports.0,
            b = ports.1,
        );
        let config_file = dir.join(format!("{name}.toml"));
        std::fs::write(&config_file, config).expect("sidecar config");
        let mut cmd = self.s.command(SUT_CPU, bin);
        cmd.arg("--config").arg(&config_file);
        cmd.env("RUST_LOG", "warn");
        let proc = Proc::spawn(cmd, &dir.join(format!("{name}.log")));
        let until = Instant::now() + Duration::from_secs(30);
        // The first watch connection flushes the grant cache: wait for it before warming.
        while !http_get(admin, "/metrics").contains("agent_secret_proxy_watch_connected 1") {
            assert!(
                Instant::now() < until,
                "sidecar {name} did not connect its watch stream"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Sidecar { proc, port }
    }

    fn wrk(&self, url: &str, conns: u32, headers: &[String], script: Option<&Path>) -> Run {
        wrk::run(&Load {
            url,
            conns,
            seconds: self.s.seconds,
            headers,
            script,
            cpu: self.s.load_cpu(),
        })
    }
}

/// One token drives every request of a run: limits high enough never to trip, so the check
/// itself is measured but not the 429s.
const RATE_LIMITS: &str = "
[rate_limits]
token_requests_per_second = 100000000
token_requests_burst = 100000000
token_injections_per_second = 100000000
token_injections_burst = 100000000
agent_requests_per_second = 100000000
agent_requests_burst = 100000000
agent_injections_per_second = 100000000
agent_injections_burst = 100000000
";

/// Whether the sidecar binary at `bin` has a `[rate_limits]` section (issue 10). Its config
/// rejects unknown keys, so an older build (`BENCH_BASELINE_PROXY`) must not get one; serde
/// keeps the field names in the binary, which is how this tells them apart.
fn knows_rate_limits(bin: &Path) -> bool {
    let needle = b"token_injections_per_second";
    std::fs::read(bin)
        .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        .unwrap_or_else(|e| panic!("read sidecar binary {}: {e}", bin.display()))
}

/// One measured row of the table.
struct Row {
    group: &'static str,
    target: String,
    conns: u32,
    run: Run,
    /// CPU time of the component under test per request, in µs (none for `direct`).
    cpu_us: Option<f64>,
}

fn run(s: Settings) {
    let started = Instant::now();
    let load_start = loadavg();
    let exe = std::env::current_exe().expect("current exe");
    let dir = tempfile::Builder::new()
        .prefix("agent-secret-bench-")
        .tempdir()
        .expect("temp dir");
    eprintln!(
        "bench: {} mode, {} s per run, conns {:?}, pinning {}, load average {load_start}, scratch {}",
        if s.smoke { "smoke" } else { "full" },
        s.seconds,
        s.conns,
        if s.pin {
            "on (SUT core 0, load core 1)"
        } else {
            "off"
        },
        dir.path().display()
    );

    let mut up = Proc::spawn(
        s.command(LOAD_CPU, &exe).tap_arg("upstream"),
        &dir.path().join("upstream.log"),
    );
    let ports: Vec<u16> = up
        .line()
        .split_whitespace()
        .map(|p| p.parse().expect("port"))
        .collect();
    let (pa, pb) = (ports[0], ports[1]);
    let hosts = vec![format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}")];
    let env = Env { s, dir, exe, hosts };

    let nginx_port = free_port();
    let nginx = start_nginx(&env, nginx_port, pa);
    let mut floor = start_floor(&env, pa);
    let floor_port: u16 = floor.line().trim().parse().expect("floor port");

    eprintln!("bench: control plane (SQLite), sidecars");
    let mut sqlite = env.control_plane("cp-sqlite", "sqlite", None);
    let hot = env.sidecar(
        "sidecar-hot",
        &env.proxy_bin(),
        env.proxy_rate_limits(),
        &sqlite,
        (pa, pb),
        "",
    );
    let baseline = env.s.baseline.clone().map(|bin| {
        let rate_limits = knows_rate_limits(&bin);
        eprintln!(
            "bench: baseline sidecar {} ({} [rate_limits])",
            bin.display(),
            if rate_limits { "with" } else { "without" }
        );
        env.sidecar(
            "sidecar-baseline",
            &bin,
            rate_limits,
            &sqlite,
            (pa, pb),
            &env.s.baseline_audit,
        )
    });
    let cold = env.s.runs(Scenario::Cold).then(|| {
        env.sidecar(
            "sidecar-nocache",
            &env.proxy_bin(),
            env.proxy_rate_limits(),
            &sqlite,
            (pa, pb),
            "\n[cache]\nmax_entries = 0\n",
        )
    });
    let headers = vec![
        format!("Proxy-Authorization: Bearer {}", sqlite.token()),
        "Authorization: Bearer {{secret:bench/api_key}}".to_owned(),
    ];

    let url = |port: u16, prefix: &str| format!("http://127.0.0.1:{port}{prefix}");
    let direct = url(pa, "");
    let via_nginx = url(nginx_port, "");
    // (target, base URL): the new sidecar's warm rows, each followed by the baseline's.
    let hot_pair = |target: &str, prefix: &str| -> Vec<(String, String)> {
        std::iter::once((target.to_owned(), url(hot.port, prefix)))
            .chain(
                baseline
                    .iter()
                    .map(|b| (format!("{target} (baseline)"), url(b.port, prefix))),
            )
            .collect()
    };
    let via_floor = url(floor_port, "");
    let scale = [
        ("direct".to_owned(), direct.clone()),
        ("nginx".to_owned(), via_nginx.clone()),
        ("pingora floor".to_owned(), via_floor.clone()),
    ];
    // Whose CPU each target's requests cost (the component under test).
    let mut sut: std::collections::HashMap<String, u32> = [
        ("nginx".to_owned(), nginx.pid()),
        ("pingora floor".to_owned(), floor.pid()),
    ]
    .into();
    for target in ["sidecar hot", "sidecar scrub full", "sidecar scrub headers"] {
        sut.insert(target.to_owned(), hot.proc.pid());
        if let Some(b) = &baseline {
            sut.insert(format!("{target} (baseline)"), b.proc.pid());
        }
    }
    if let Some(cold) = &cold {
        sut.insert("sidecar caches off".to_owned(), cold.proc.pid());
    }
    let ticks_per_second = probes::clock_ticks_per_second();
    let mut small: Vec<(String, String)> = Vec::new();
    let mut large: Vec<(String, String)> = Vec::new();
    if env.s.runs(Scenario::Hot) || cold.is_some() {
        small.extend(scale.iter().cloned());
    }
    if env.s.runs(Scenario::Hot) {
        small.extend(hot_pair("sidecar hot", "/a"));
        large.extend(scale.iter().cloned());
        large.extend(hot_pair("sidecar scrub full", "/a"));
        large.extend(hot_pair("sidecar scrub headers", "/b"));
    }
    if let Some(cold) = &cold {
        small.push(("sidecar caches off".to_owned(), url(cold.port, "/a")));
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // First, on fresh processes: memory a burst of 1 MiB bodies left behind in the allocator
    // would otherwise count as the connections'.
    let mut rss = Vec::new();
    let rss_targets = if env.s.runs(Scenario::Rss) {
        eprintln!(
            "bench: RSS with {} idle keep-alive connections",
            env.s.idle_conns
        );
        vec![
            ("nginx", nginx_port, "/small", nginx.pid()),
            ("floor", floor_port, "/small", floor.pid()),
            ("sidecar", hot.port, "/a/small", hot.proc.pid()),
        ]
    } else {
        Vec::new()
    };
    for (target, port, path, pid) in rss_targets {
        let before = probes::rss_mib(pid);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let (conns, ok) = rt.block_on(probes::idle_connections(
            addr,
            path,
            &headers,
            env.s.idle_conns,
        ));
        std::thread::sleep(Duration::from_millis(500));
        let after = probes::rss_mib(pid);
        rss.push(
            json!({"target": target, "idle_connections": conns.len(), "ok_responses": ok,
                        "rss_before_mib": before, "rss_idle_mib": after}),
        );
        drop(conns);
    }

    // Warm caches and upstream pools (the hot path is measured warm).
    let warm = if env.s.smoke { 0.0 } else { 1.0 };
    let mut warm_urls = vec![direct.clone(), via_nginx.clone(), via_floor.clone()];
    for sidecar in std::iter::once(&hot).chain(&baseline).chain(&cold) {
        warm_urls.push(url(sidecar.port, "/a"));
        warm_urls.push(url(sidecar.port, "/b"));
    }
    for base in &warm_urls {
        let _ = wrk::run(&Load {
            url: &format!("{base}/small"),
            conns: 16,
            seconds: warm,
            headers: &headers,
            script: None,
            cpu: env.s.load_cpu(),
        });
    }

    let mut rows = Vec::new();
    for (group, path, targets) in [("small", "/small", &small), ("1mib", "/1m", &large)] {
        if targets.is_empty() {
            continue;
        }
        eprintln!("bench: {group} bodies");
        for (i, &c) in env.s.conns.iter().enumerate() {
            // New and baseline alternate which goes first, so a drift in the machine's load
            // does not always favour the same one.
            let mut order: Vec<&(String, String)> = targets.iter().collect();
            if i % 2 == 1 {
                swap_baseline_pairs(&mut order);
            }
            for (target, base) in order {
                let pid = sut.get(target).copied();
                let before = pid.and_then(probes::cpu_ticks);
                let run = env.wrk(&format!("{base}{path}"), c, &headers, None);
                let after = pid.and_then(probes::cpu_ticks);
                let cpu_us = before.zip(after).map(|(b, a)| {
                    (a - b) as f64 / ticks_per_second * 1e6 / run.requests.max(1) as f64
                });
                rows.push(Row {
                    group,
                    target: target.clone(),
                    conns: c,
                    run,
                    cpu_us,
                });
            }
        }
    }

    let mut latency = Vec::new();
    if env.s.runs(Scenario::Latency) {
        eprintln!(
            "bench: latency at {} req/s over {} connections",
            env.s.rate, env.s.rate_conns
        );
        let mut targets = vec![
            ("direct".to_owned(), pa, "/small"),
            ("nginx".to_owned(), nginx_port, "/small"),
            ("pingora floor".to_owned(), floor_port, "/small"),
            ("sidecar hot".to_owned(), hot.port, "/a/small"),
        ];
        if let Some(b) = &baseline {
            targets.push(("sidecar hot (baseline)".to_owned(), b.port, "/a/small"));
        }
        targets.push(("sidecar hot, cp paused".to_owned(), hot.port, "/a/small"));
        // Rounds interleave the targets, so a slow second of this shared VM (bench/README.md
        // "Noise") lands on all of them; each target's samples are pooled across rounds.
        let rounds = if env.s.smoke { 1 } else { LATENCY_ROUNDS };
        for round in 0..rounds {
            for (target, port, path) in &targets {
                let addr: SocketAddr = ([127, 0, 0, 1], *port).into();
                let paused = target.ends_with("cp paused");
                if paused {
                    signal(sqlite.proc.pid(), "-STOP");
                }
                let measured = rt.block_on(open_loop::run(
                    addr,
                    path,
                    &headers,
                    env.s.rate,
                    env.s.seconds / rounds as f64,
                    env.s.rate_conns,
                ));
                if paused {
                    signal(sqlite.proc.pid(), "-CONT");
                }
                if round == 0 {
                    latency.push((target.clone(), measured));
                } else if let Some((_, pooled)) = latency.iter_mut().find(|(t, _)| t == target) {
                    pooled.absorb(measured);
                }
            }
        }
    }

    let mut sse = Vec::new();
    let sse_targets = if env.s.runs(Scenario::Sse) {
        eprintln!("bench: SSE time to first event");
        vec![
            ("direct", pa, "/sse"),
            ("nginx", nginx_port, "/sse"),
            ("sidecar scrub full", hot.port, "/a/sse"),
            ("sidecar scrub headers", hot.port, "/b/sse"),
        ]
    } else {
        Vec::new()
    };
    for (target, port, path) in sse_targets {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let samples = rt.block_on(probes::sse_ttfe(addr, path, &headers, env.s.sse_samples));
        sse.push(json!({
            "target": target,
            "samples": samples.len(),
            "p50_ms": probes::percentile(&samples, 0.5),
            "p99_ms": probes::percentile(&samples, 0.99),
        }));
    }

    let mut resolve = Vec::new();
    if env.s.runs(Scenario::Resolve) {
        resolve_runs(&env, &mut sqlite, &env.s.sqlite_seeds, &mut resolve);
    }

    // PostgreSQL serves only the caches-off and resolve scenarios.
    let pg_admin = (env.s.runs(Scenario::Cold) || env.s.runs(Scenario::Resolve))
        .then(|| postgres_admin_url(&rt))
        .flatten();
    if let Some(admin) = &pg_admin {
        let db = format!(
            "ass_bench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let url = with_database(admin, &db);
        rt.block_on(pg_exec(admin, &format!("CREATE DATABASE {db}")));
        eprintln!("bench: control plane (PostgreSQL {db})");
        {
            let mut pg = env.control_plane("cp-postgres", "postgres", Some(&url));
            if env.s.runs(Scenario::Cold) {
                let cold_pg = env.sidecar(
                    "sidecar-nocache-pg",
                    &env.proxy_bin(),
                    env.proxy_rate_limits(),
                    &pg,
                    (pa, pb),
                    "\n[cache]\nmax_entries = 0\n",
                );
                let pg_headers = vec![
                    format!("Proxy-Authorization: Bearer {}", pg.token()),
                    headers[1].clone(),
                ];
                let base = format!("http://127.0.0.1:{}/a/small", cold_pg.port);
                for &c in &env.s.conns {
                    let run = env.wrk(&base, c, &pg_headers, None);
                    rows.push(Row {
                        group: "small",
                        target: "sidecar caches off (PostgreSQL)".into(),
                        conns: c,
                        run,
                        cpu_us: None,
                    });
                }
            }
            if env.s.runs(Scenario::Resolve) {
                resolve_runs(&env, &mut pg, &env.s.pg_seeds, &mut resolve);
            }
        }
        rt.block_on(pg_exec(
            admin,
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        ));
    } else if env.s.runs(Scenario::Cold) || env.s.runs(Scenario::Resolve) {
        eprintln!("bench: PostgreSQL not reachable; resolve measured on SQLite only");
    }
    drop((hot, baseline, cold, sqlite, nginx, floor, up));

    let (latency, latency_added_p99) = open_loop::report(&latency);
    let report = report(
        &env.s,
        &rows,
        &sse,
        &rss,
        &resolve,
        pg_admin.is_some(),
        latency_added_p99,
    );
    let http = |group: &str, target: &str, conns: u32| {
        rows.iter()
            .find(|r| r.group == group && r.target == target && r.conns == conns)
            .map(|r| (r.run.rps, r.cpu_us))
    };
    let summary = summary::print(&summary::Figures {
        http: &http,
        latency: &latency,
        rss: &rss,
        resolve: &resolve,
        // The issue's figures are read at 64 connections; at the most measured otherwise.
        conns: if env.s.conns.contains(&64) {
            64
        } else {
            env.s.conns.iter().copied().max().unwrap_or(64)
        },
    });
    let json = json!({
        "mode": if env.s.smoke { "smoke" } else { "full" },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "seconds_per_run": env.s.seconds,
        "pinned": env.s.pin,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "finished_at": chrono::Utc::now().to_rfc3339(),
        "wall_seconds": started.elapsed().as_secs_f64(),
        "http": rows.iter().map(|r| json!({"group": r.group, "target": r.target, "conns": r.conns, "result": r.run.json(), "cpu_us_per_request": r.cpu_us})).collect::<Vec<_>>(),
        "fixed_rate_latency": latency,
        "sse_ttfe": sse,
        "rss": rss,
        "resolve": resolve,
        "targets": report,
        "summary": summary,
        "only": env.s.only.iter().map(|o| format!("{o:?}").to_lowercase()).collect::<Vec<_>>(),
        "proxy": env.proxy_bin().display().to_string(),
        "baseline_proxy": env.s.baseline.as_ref().map(|b| b.display().to_string()),
    });
    if let Some(parent) = env.s.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(
        &env.s.out,
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("write results");
    println!(
        "\nresults: {} ({:.0} s; load average {} at the end)",
        env.s.out.display(),
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    // A scenario that completed nothing did not run: the one failure this command reports.
    let dead: Vec<String> = rows
        .iter()
        .filter(|r| r.run.requests <= r.run.errors)
        .map(|r| format!("{} {} at {} conns", r.group, r.target, r.conns))
        .chain(
            resolve
                .iter()
                .filter(|v| {
                    v["result"]["requests"].as_u64().unwrap_or(0)
                        <= v["result"]["errors"].as_u64().unwrap_or(0)
                })
                .map(|v| format!("resolve on {} at {} conns", v["backend"], v["conns"])),
        )
        .collect();
    if !dead.is_empty() {
        eprintln!(
            "bench: FAILED, no successful requests in: {}",
            dead.join("; ")
        );
        std::process::exit(1);
    }
}

trait TapArg {
    fn tap_arg(self, arg: &str) -> Self;
}

impl TapArg for Command {
    fn tap_arg(mut self, arg: &str) -> Self {
        self.arg(arg);
        self
    }
}

/// Interleaved rounds of the fixed-rate scenario in full mode (its `--seconds` are split
/// between them).
const LATENCY_ROUNDS: usize = 3;

/// The floor (`bench/floor`): the least a pingora proxy does, on the core under test; its
/// first stdout line is its port.
fn start_floor(env: &Env, upstream: u16) -> Proc {
    let bin = env.exe.with_file_name("pingora-floor");
    let mut cmd = env.s.command(SUT_CPU, &bin);
    cmd.arg("127.0.0.1:0").arg(format!("127.0.0.1:{upstream}"));
    Proc::spawn(cmd, &env.dir.path().join("floor.log"))
}

fn start_nginx(env: &Env, port: u16, upstream: u16) -> Proc {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/nginx.conf.template");
    let dir = env.dir.path().join("nginx");
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let conf = std::fs::read_to_string(&template)
        .expect("bench/nginx.conf.template")
        .replace("{{DIR}}", &dir.display().to_string())
        .replace("{{LISTEN}}", &port.to_string())
        .replace("{{UPSTREAM}}", &upstream.to_string());
    let conf_file = dir.join("nginx.conf");
    std::fs::write(&conf_file, conf).expect("nginx.conf");
    let mut cmd = env.s.command(SUT_CPU, Path::new("nginx"));
    cmd.arg("-p").arg(&dir).arg("-c").arg(&conf_file);
    let proc = Proc::spawn(cmd, &env.dir.path().join("nginx.log"));
    wait_for_port(port, "nginx");
    proc
}

/// Puts each `X (baseline)` target before its `X`.
fn swap_baseline_pairs(order: &mut [&(String, String)]) {
    for i in 1..order.len() {
        if order[i].0.ends_with(" (baseline)") {
            order.swap(i - 1, i);
        }
    }
}

/// Resolve throughput at each seed size, with the control plane alone on the SUT core.
fn resolve_runs(env: &Env, stack: &mut Stack, seeds: &[(i64, i64)], out: &mut Vec<Value>) {
    let script = env
        .dir
        .path()
        .join(format!("resolve-{}.lua", stack.backend));
    let dest = &env.hosts[0];
    let bodies: Vec<String> = stack.info["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| {
            let body = json!({"token": t, "paths": [control_plane::SECRET_PATH],
                              "destination_host": dest, "client_ip": "127.0.0.1"});
            format!("  {:?},", body.to_string())
        })
        .collect();
    let lua = format!(
        "local bodies = {{\n{}\n}}\nlocal i = 0\nwrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {}\"\nrequest = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, \"/v1/sidecar/resolve\", nil, bodies[i])\nend\n",
        bodies.join("\n"),
        stack.info["sidecar_key"].as_str().expect("key"),
    );
    std::fs::write(&script, lua).expect("lua");
    let url = stack.info["url"].as_str().expect("url").to_owned();
    let conns: Vec<u32> = if env.s.smoke { vec![16] } else { vec![16, 64] };
    for &(tokens, secrets) in seeds {
        eprintln!(
            "bench: resolve on {} with {tokens} tokens / {secrets} secrets",
            stack.backend
        );
        let answer = stack.proc.send(&format!("seed {tokens} {secrets}"));
        let seeded: Value = answer
            .strip_prefix("seeded ")
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_else(|| panic!("seeding failed: {answer}"));
        pin(env, stack.proc.pid(), SUT_CPU);
        for &c in &conns {
            let run = env.wrk(&url, c, &[], Some(&script));
            out.push(
                json!({"backend": stack.backend, "seeded": seeded, "conns": c,
                            "real_tokens": env.s.real_tokens, "result": run.json()}),
            );
        }
        pin(env, stack.proc.pid(), LOAD_CPU);
    }
}

/// Moves every thread of `pid` to `cpu`.
fn pin(env: &Env, pid: u32, cpu: u32) {
    if env.s.pin {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

/// The PostgreSQL superuser URL: the test variable, else the local server if it answers.
fn postgres_admin_url(rt: &tokio::runtime::Runtime) -> Option<String> {
    use sqlx::Connection;
    let url = std::env::var("AGENT_SECRET_STORE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let ok = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(3),
            sqlx::postgres::PgConnection::connect(&url),
        )
        .await
        .is_ok_and(|c| c.is_ok())
    });
    ok.then_some(url)
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    if query.is_empty() {
        format!("{base}/{db}")
    } else {
        format!("{base}/{db}?{query}")
    }
}

async fn pg_exec(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut c = sqlx::postgres::PgConnection::connect(url)
        .await
        .expect("PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut c)
        .await
        .expect(sql);
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `/proc/loadavg`'s first three fields: other work on this 2-core machine skews the numbers.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Whether the working tree had uncommitted changes (the binaries measured include them).
fn git_dirty() -> bool {
    Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

fn find<'a>(rows: &'a [Row], group: &str, target: &str, conns: u32) -> Option<&'a Run> {
    rows.iter()
        .find(|r| r.group == group && r.target == target && r.conns == conns)
        .map(|r| &r.run)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// Prints the tables; returns the targets as JSON.
fn report(
    s: &Settings,
    rows: &[Row],
    sse: &[Value],
    rss: &[Value],
    resolve: &[Value],
    pg: bool,
    latency_added_p99: f64,
) -> Value {
    println!(
        "\n{:<6} {:<32} {:>5} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6}",
        "body",
        "target",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "×direct",
        "×nginx",
        "×floor",
        "+p99 ms",
        "CPU µs",
        "errors"
    );
    for r in rows {
        let direct = find(rows, r.group, "direct", r.conns);
        let nginx = find(rows, r.group, "nginx", r.conns);
        let floor = find(rows, r.group, "pingora floor", r.conns);
        println!(
            "{:<6} {:<32} {:>5} {:>10.0} {:>8.3} {:>8.3} {:>8.2} {:>8.2} {:>8.2} {:>9.3} {:>8.1} {:>6}",
            r.group,
            r.target,
            r.conns,
            r.run.rps,
            r.run.p50_ms,
            r.run.p99_ms,
            direct.map_or(f64::NAN, |d| ratio(r.run.rps, d.rps)),
            nginx.map_or(f64::NAN, |n| ratio(r.run.rps, n.rps)),
            floor.map_or(f64::NAN, |f| ratio(r.run.rps, f.rps)),
            direct.map_or(f64::NAN, |d| r.run.p99_ms - d.p99_ms),
            r.cpu_us.unwrap_or(f64::NAN),
            r.run.errors,
        );
    }
    let versus = baseline_comparison(rows);
    println!("\nSSE time to first event (fresh connection each; upstream sends the 2nd event 20 ms later)");
    for v in sse {
        println!(
            "  {:<24} p50 {:>7.3} ms  p99 {:>7.3} ms  ({} samples)",
            v["target"].as_str().unwrap_or_default(),
            v["p50_ms"].as_f64().unwrap_or(f64::NAN),
            v["p99_ms"].as_f64().unwrap_or(f64::NAN),
            v["samples"]
        );
    }
    println!("\nRSS with idle keep-alive connections (each served one request first)");
    for v in rss {
        println!(
            "  {:<8} {:>5} conns ({} ok): {:>7.1} MiB idle, {:>6.1} MiB before",
            v["target"].as_str().unwrap_or_default(),
            v["idle_connections"],
            v["ok_responses"],
            v["rss_idle_mib"].as_f64().unwrap_or(f64::NAN),
            v["rss_before_mib"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("\nControl-plane resolve (POST /v1/sidecar/resolve over TLS, keep-alive; control plane alone on the SUT core)");
    for v in resolve {
        println!(
            "  {:<8} {:>7} tokens {:>6} secrets  conns {:>3}: {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
            v["backend"].as_str().unwrap_or_default(),
            v["seeded"]["tokens"],
            v["seeded"]["secrets"],
            v["conns"],
            v["result"]["rps"].as_f64().unwrap_or(f64::NAN),
            v["result"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
            v["result"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            v["result"]["errors"],
        );
    }

    // The issue's targets, at the largest connection count measured.
    let top = s.conns.iter().copied().max().unwrap_or(64);
    let rps = |g: &str, t: &str, c: u32| find(rows, g, t, c).map_or(f64::NAN, |r| r.rps);
    let hot_vs_nginx = ratio(rps("small", "sidecar hot", top), rps("small", "nginx", top));
    let hot_vs_floor = ratio(
        rps("small", "sidecar hot", top),
        rps("small", "pingora floor", top),
    );
    let cold_vs_nginx = ratio(
        rps("small", "sidecar caches off", top),
        rps("small", "nginx", top),
    );
    let scrub = ratio(
        rps("1mib", "sidecar scrub full", top),
        rps("1mib", "sidecar scrub headers", top),
    );
    let added_p99: Vec<(u32, f64)> = s
        .conns
        .iter()
        .map(|&c| {
            let d = find(rows, "small", "direct", c).map_or(f64::NAN, |r| r.p99_ms);
            let h = find(rows, "small", "sidecar hot", c).map_or(f64::NAN, |r| r.p99_ms);
            (c, h - d)
        })
        .collect();
    let sidecar_rss = rss
        .iter()
        .find(|v| v["target"] == "sidecar")
        .and_then(|v| v["rss_idle_mib"].as_f64())
        .unwrap_or(f64::NAN);
    let backend = if pg { "postgres" } else { "sqlite" };
    let resolve_at = |c: u64| -> Vec<(i64, f64)> {
        resolve
            .iter()
            .filter(|v| v["backend"] == backend && v["conns"] == c)
            .map(|v| {
                (
                    v["seeded"]["tokens"].as_i64().unwrap_or(0),
                    v["result"]["rps"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect()
    };
    let res = {
        let r = resolve_at(64);
        if r.is_empty() {
            resolve_at(16)
        } else {
            r
        }
    };
    let res_min = res.iter().map(|r| r.1).fold(f64::NAN, f64::min);
    let flat = match (res.first(), res.last()) {
        (Some(a), Some(b)) if res.len() > 1 => ratio(b.1, a.1),
        _ => f64::NAN,
    };
    // A NaN is a scenario `--only` left out.
    let mark = |value: f64, ok: bool| {
        if value.is_nan() {
            "not measured"
        } else if ok {
            "met"
        } else {
            "MISSED"
        }
    };
    println!("\nTargets (issue 4), at {top} connections where it applies");
    println!(
        "  hot path ≥ 0.9× nginx            {:>6.2}×   {}",
        hot_vs_nginx,
        mark(hot_vs_nginx, hot_vs_nginx >= 0.9)
    );
    println!(
        "  hot path ≥ 0.85× pingora floor   {:>6.2}×   {}",
        hot_vs_floor,
        mark(hot_vs_floor, hot_vs_floor >= 0.85)
    );
    for (c, a) in &added_p99 {
        println!(
            "  p99 added ≤ 1 ms over direct     {:>6.3} ms at {c} conns  {}",
            a,
            mark(*a, *a <= 1.0)
        );
    }
    println!(
        "  p99 added ≤ 0.3 ms at {:>5.0}/s    {:>6.3} ms {}",
        s.rate,
        latency_added_p99,
        mark(latency_added_p99, latency_added_p99 <= 0.3)
    );
    println!(
        "  caches off ≥ 0.3× nginx          {:>6.2}×   {}",
        cold_vs_nginx,
        mark(cold_vs_nginx, cold_vs_nginx >= 0.3)
    );
    println!(
        "  scrub on ≥ 0.8× off (1 MiB)      {:>6.2}×   {}",
        scrub,
        mark(scrub, scrub >= 0.8)
    );
    // Issue 4 asked ≤ 64 MiB at 1,000 connections (the smoke size); issue 16 ≤ 128 MiB at 10,000.
    let rss_goal = if s.idle_conns >= 10_000 { 128.0 } else { 64.0 };
    println!(
        "  RSS ≤ {rss_goal:.0} MiB, {} idle conns {:>6.1} MiB {}",
        s.idle_conns,
        sidecar_rss,
        mark(sidecar_rss, sidecar_rss <= rss_goal)
    );
    println!(
        "  resolve ≥ 3,000/s ({backend})     {:>6.0}/s  {} ({})",
        res_min,
        mark(res_min, res_min >= 3000.0),
        res.iter()
            .map(|(t, r)| format!("{t} tokens: {r:.0}/s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if res.len() > 1 {
        println!("  resolve flat small→large seed    {:>6.2}×", flat);
    }
    let bad: u64 = rows.iter().map(|r| r.run.errors).sum::<u64>()
        + resolve
            .iter()
            .map(|v| v["result"]["errors"].as_u64().unwrap_or(0))
            .sum::<u64>();
    if bad > 0 {
        println!(
            "  WARNING: {bad} non-2xx responses or socket errors; those rows measured failures"
        );
    }
    json!({
        "conns": top,
        "hot_vs_nginx": hot_vs_nginx,
        "hot_vs_floor": hot_vs_floor,
        "p99_added_ms": added_p99.iter().map(|(c, a)| json!({"conns": c, "ms": a})).collect::<Vec<_>>(),
        "caches_off_vs_nginx": cold_vs_nginx,
        "scrub_full_vs_headers": scrub,
        "sidecar_rss_idle_mib": sidecar_rss,
        "idle_connections": s.idle_conns,
        "fixed_rate": s.rate,
        "fixed_rate_added_p99_ms": latency_added_p99,
        "resolve_backend": backend,
        "resolve_rps": res.iter().map(|(t, r)| json!({"tokens": t, "rps": r})).collect::<Vec<_>>(),
        "resolve_flatness": flat,
        "errors": bad,
        "new_vs_baseline": versus,
    })
}

/// Prints each `X (baseline)` row next to its `X` row (same group and connection count) with
/// the req/s ratio new/baseline; returns them as JSON (empty without a baseline).
fn baseline_comparison(rows: &[Row]) -> Vec<Value> {
    let pairs: Vec<(&Row, &Run)> = rows
        .iter()
        .filter_map(|base| {
            let target = base.target.strip_suffix(" (baseline)")?;
            Some((base, find(rows, base.group, target, base.conns)?))
        })
        .collect();
    if pairs.is_empty() {
        return Vec::new();
    }
    println!("\nNew sidecar vs baseline (BENCH_BASELINE_PROXY), same URLs and connections");
    println!(
        "{:<6} {:<24} {:>5} {:>10} {:>10} {:>9} {:>8} {:>8}",
        "body", "target", "conns", "new req/s", "base req/s", "new/base", "new p99", "base p99"
    );
    pairs
        .iter()
        .map(|(base, new)| {
            let target = base.target.trim_end_matches(" (baseline)");
            let r = ratio(new.rps, base.run.rps);
            println!(
                "{:<6} {:<24} {:>5} {:>10.0} {:>10.0} {:>9.3} {:>8.3} {:>8.3}",
                base.group,
                target,
                base.conns,
                new.rps,
                base.run.rps,
                r,
                new.p99_ms,
                base.run.p99_ms
            );
            json!({"group": base.group, "target": target, "conns": base.conns,
                   "new_rps": new.rps, "baseline_rps": base.run.rps, "ratio": r,
                   "new_p99_ms": new.p99_ms, "baseline_p99_ms": base.run.p99_ms})
        })
        .collect()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}
