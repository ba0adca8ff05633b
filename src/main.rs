use clap::Parser;
use hookrelay::cli::{Cli, Command};
use hookrelay::server::Application;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        other => hookrelay::cli::run_admin(other),
    }
}

#[tokio::main]
async fn serve(config: hookrelay::cli::ConfigArg) -> anyhow::Result<()> {
    let config = config.load()?;
    hookrelay::telemetry::init(&config.log);
    let app = Application::build(config).await?;
    app.run_until_stopped(hookrelay::shutdown::signal()).await
}
