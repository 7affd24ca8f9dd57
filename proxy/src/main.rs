//! The `agent-secret-proxy` binary: install the crypto provider, parse the command line, load
//! the configuration and run the sidecar until SIGTERM/SIGINT. Everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_secret_proxy::ProxyConfig;
use clap::Parser;

/// Agent Secret Store sidecar: injects secrets into agents' outbound HTTP requests.
#[derive(Debug, Parser)]
#[command(name = "agent-secret-proxy", version)]
struct Cli {
    /// The sidecar configuration (see config/proxy.toml).
    #[arg(
        long,
        env = "AGENT_SECRET_PROXY_CONFIG",
        default_value = "config/proxy.toml"
    )]
    config: PathBuf,
}

fn main() -> ExitCode {
    // First thing: the one process-wide rustls provider (ring), before any TLS client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging();
    let config = match ProxyConfig::load(&cli.config, &|name| std::env::var(name).ok()) {
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
