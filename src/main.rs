//! The `molecule` binary: parse the command line, set up tracing, dispatch.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = molecule::cli::Cli::parse();
    molecule::telemetry::init("info,sqlx=warn,tower_http=info");
    match molecule::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("molecule: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
