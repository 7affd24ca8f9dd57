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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
