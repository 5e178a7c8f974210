//! `imlab token`: mint an HMAC-signed login token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};

/// Mint a login token that `imlab serve --auth-secret` accepts.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  imlab token --user alice --secret s3cret --ttl 24h")]
pub struct TokenArgs {
    /// The user the token logs in as ([A-Za-z0-9_-], 1 to 128 bytes).
    #[arg(long)]
    user: String,
    /// The server's secret.
    #[arg(long, env = "IMLAB_AUTH_SECRET", hide_env_values = true)]
    secret: String,
    /// How long the token stays valid.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs();
    let expiry_s = now_s + args.ttl.as_secs();
    let token = imlab_core::auth::mint_token(&args.secret, &args.user, expiry_s)
        .map_err(|error| anyhow!("--user: {error}"))?;
    println!("{token}");
    Ok(())
}
