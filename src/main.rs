use clap::Parser;
use hookrelay::cli::{Cli, Command};
use hookrelay::server::Application;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a request allocates and frees many
/// small buffers across threads, and glibc spent ~15% of the CPU of a unique
/// event in `_int_malloc`/`malloc_consolidate` (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
async fn serve(config_arg: hookrelay::cli::ConfigArg) -> anyhow::Result<()> {
    let config = config_arg.load()?;
    hookrelay::telemetry::init(&config.log);
    let app = Application::build(config).await?;
    app.reload_on_sighup(move || config_arg.load());
    app.run_until_stopped(hookrelay::shutdown::signal()).await
}
