//! The `imlab` command: argument parsing and wiring only. Every capability lives in a member
//! crate (`imlab-core` for now).

mod serve;
mod token;

use clap::{Parser, Subcommand};

/// imlab: build, break and measure instant-messaging backends for mobile users.
#[derive(Parser)]
#[command(
    name = "imlab",
    version,
    about,
    after_help = "Examples:\n  imlab serve --listen 127.0.0.1:7400\n  imlab token --user alice --secret s3cret --ttl 24h"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the IM server on a real socket.
    Serve(serve::ServeArgs),
    /// Mint a signed login token for a user.
    Token(token::TokenArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Token(args) => token::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
