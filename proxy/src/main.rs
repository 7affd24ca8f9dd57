//! The `agent-secret-proxy` binary: install the crypto provider, parse the command line, load
//! the configuration and run the sidecar until SIGTERM/SIGINT. Everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_secret_proxy::config::ENV_PROXY_CONFIG_TOML;
use agent_secret_proxy::ProxyConfig;
use clap::Parser;

/// Agent Secret Store sidecar: injects secrets into agents' outbound HTTP requests.
#[derive(Debug, Parser)]
#[command(name = "agent-secret-proxy", version)]
struct Cli {
    /// The sidecar configuration (see config/proxy.toml) [default: config/proxy.toml].
    /// `AGENT_SECRET_PROXY_CONFIG_TOML` gives the configuration's text instead (the Kubernetes
    /// injector's way); setting both is an error.
    #[arg(long, env = "AGENT_SECRET_PROXY_CONFIG")]
    config: Option<PathBuf>,
}

/// jemalloc instead of glibc's malloc. A proxied request allocates and frees ~110 small
/// blocks, and glibc's bins (with `malloc_consolidate` before every request over 1 KiB) cost
/// ~10 µs of the sidecar's ~57 µs of CPU per warm request. mimalloc saved a little more on
/// small requests but ran 512 connections of 1 MiB bodies at ~0.6× glibc's rate (it returns
/// freed pages after 10 ms and faults them in again); jemalloc matched glibc there with ~30 %
/// less memory (bench/README.md "session 15").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // First thing: the one process-wide rustls provider (ring), before any TLS client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging();
    let lookup = |name: &str| std::env::var(name).ok();
    let text = std::env::var(ENV_PROXY_CONFIG_TOML)
        .ok()
        .filter(|t| !t.is_empty());
    let loaded = match (text, cli.config) {
        (Some(_), Some(path)) => {
            eprintln!(
                "error: both {ENV_PROXY_CONFIG_TOML} and a configuration file ({}) are given; use one",
                path.display()
            );
            return ExitCode::from(2);
        }
        (Some(text), None) => ProxyConfig::load_text(&text, &lookup),
        (None, path) => ProxyConfig::load(
            &path.unwrap_or_else(|| PathBuf::from("config/proxy.toml")),
            &lookup,
        ),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent_secret_proxy::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Log to stderr at `RUST_LOG` (default `info`), with the HTTP and TLS libraries capped below
/// the levels at which they print headers (`agent_secret_core::diagnostics`).
fn init_logging() {
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let pins = agent_secret_core::diagnostics::PINNED_LOG_TARGETS
        .iter()
        .fold(
            Targets::new().with_default(LevelFilter::TRACE),
            |pins, (target, level)| pins.with_target(*target, *level),
        );
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter.and(pins));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
