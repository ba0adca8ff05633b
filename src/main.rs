use clap::Parser;
use hookrelay::cli::{Cli, Command};
use hookrelay::config::Config;
use hookrelay::server::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            hookrelay::telemetry::init(&config.log);
            let app = Application::build(config).await?;
            app.run_until_stopped(hookrelay::shutdown::signal()).await
        }
    }
}
