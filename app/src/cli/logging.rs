//! Log output on stderr: the server's level and format come from `[log]`; the other commands
//! log warnings only (or what `RUST_LOG` asks for), so their stdout and stderr stay readable.

use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use agent_secret_control_plane::config::{LogConfig, LogFormat};

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

/// `filter`, with the HTTP, TLS and SQL libraries capped below the levels at which they print
/// requests (`agent_secret_core::diagnostics::PINNED_LOG_TARGETS`): `RUST_LOG=trace` cannot
/// put a header, a token or a secret in the log.
fn install(filter: EnvFilter, format: LogFormat) {
    let pins = agent_secret_core::diagnostics::PINNED_LOG_TARGETS
        .iter()
        .fold(
            Targets::new().with_default(LevelFilter::TRACE),
            |pins, (target, level)| pins.with_target(*target, *level),
        );
    let filter = filter.and(pins);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    // `try_init` fails only when a subscriber is already set (e.g. in tests): keep that one.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// `dev`: warnings from everything, plus what the servers have to say, unless `RUST_LOG` says
/// otherwise.
pub fn init_dev() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,agent_secret_store=info,agent_secret_control_plane=info,agent_secret_proxy=info",
        )
    });
    install(filter, LogFormat::Text);
}
