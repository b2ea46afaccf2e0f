//! The `pylon` binary: `serve` runs a node; `token create` mints access tokens.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pylon_auth::{Claims, VideoGrant};
use pylon_server::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "pylon",
    version,
    about = "A WebRTC SFU that speaks the LiveKit protocol"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a server node.
    Serve(ServeArgs),
    /// Access tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Development mode: loopback only, API key `devkey` / secret `secret`.
    #[arg(long)]
    dev: bool,
    /// LiveKit-style YAML config file.
    #[arg(long, env = "PYLON_CONFIG")]
    config: Option<PathBuf>,
    /// IP address to bind HTTP and UDP to.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// HTTP (signalling) port.
    #[arg(long)]
    port: Option<u16>,
    /// UDP media port.
    #[arg(long)]
    udp_port: Option<u16>,
    /// IP address advertised to clients for media.
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// API keys as "key: secret" pairs, comma separated.
    #[arg(long, env = "LIVEKIT_KEYS")]
    keys: Option<String>,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a join token.
    Create(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    api_key: String,
    #[arg(long, env = "LIVEKIT_API_SECRET", default_value = "secret")]
    api_secret: String,
    /// Room to join.
    #[arg(long)]
    room: String,
    /// Participant identity.
    #[arg(long)]
    identity: String,
    /// Validity in seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    valid_for: i64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(args) => serve(args),
        Cmd::Token {
            cmd: TokenCmd::Create(args),
        } => {
            println!("{}", create_token(&args));
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        dev: args.dev,
        bind: args.bind,
        port: args.port,
        udp_port: args.udp_port,
        node_ip: args.node_ip,
        keys: args.keys,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pylon: {e}");
            std::process::exit(2);
        }
    };
    let filter = std::env::var("RUST_LOG")
        .unwrap_or_else(|_| format!("warn,pylon={0},pylon_server={0},pylon_core={0}", config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(pylon_server::run(config))
}

fn create_token(a: &TokenArgs) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims = Claims {
        iss: a.api_key.clone(),
        sub: a.identity.clone(),
        nbf: Some(now),
        exp: Some(now + a.valid_for),
        video: Some(VideoGrant {
            room_join: true,
            room: a.room.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    pylon_auth::mint(&claims, a.api_secret.as_bytes())
}
