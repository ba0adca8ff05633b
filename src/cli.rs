//! Command-line interface.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "hookrelay", version, about = "Receives ZEGO and NetEase callbacks, verifies them, stores them durably and delivers them to sinks.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Config file (TOML). Without it, built-in defaults are used.
        #[arg(long, env = "HOOKRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
}
