//! Log output on stderr: the server's level and format come from `[log]`; the other commands
//! log warnings only (or what `RUST_LOG` asks for), so their stdout and stderr stay readable.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Default filter of the non-server commands.
const CLI_DEFAULT_FILTER: &str = "warn";

/// Installs the subscriber for `serve` from `[log]`. A second call is a no-op.
pub fn init_server(log: &LogConfig) {
    // `Config::load` has already checked that the level parses.
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    install(filter, log.format);
}

/// Installs the subscriber for every other command. A second call is a no-op.
pub fn init_cli() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(CLI_DEFAULT_FILTER));
    install(filter, LogFormat::Text);
}

fn install(filter: EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // `try_init` fails only when a subscriber is already set (e.g. in tests): keep that one.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `dev`: warnings from everything, plus what the servers have to say, unless `RUST_LOG` says
/// otherwise.
pub fn init_dev() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,agent_secret_store=info,agent_secret_proxy=info"));
    install(filter, LogFormat::Text);
}
