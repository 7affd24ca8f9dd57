//! The `agent-secret-store` binary: installs the crypto provider, parses the command line and
//! maps the outcome to an exit status. Everything else lives in the library (`cli`).

use std::process::ExitCode;

use agent_secret_store::cli::{self, Cli};
use clap::Parser;

fn main() -> ExitCode {
    // First thing: one process-wide rustls provider (ring), before any TLS or KMS client is
    // built. An error only means one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: runtime_failed: cannot start the async runtime: {e}");
            return ExitCode::from(cli::failure::EXIT_FAILED);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => ExitCode::from(failure.exit),
    }
}
