//! The `pylon` binary: `serve` runs a node; `token`, `room` and `participant` are admin
//! commands against a running server's Room API (like LiveKit's `lk`); `load-test` loads a
//! server with real WebRTC participants.

mod client;
mod janus;
mod load_test;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use livekit_protocol as lk;
use pylon_auth::{Claims, VideoGrant};
use pylon_server::{Config, Overrides};

use client::ApiClient;

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
    /// Rooms on a running server.
    Room {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        cmd: RoomCmd,
    },
    /// Participants on a running server.
    Participant {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        cmd: ParticipantCmd,
    },
    /// Load a server with real WebRTC publishers and subscribers and report what arrived.
    LoadTest(load_test::LoadTestArgs),
    /// Drain a running `pylon serve` (a Kubernetes preStop hook): send it SIGTERM and wait
    /// until it has exited.
    Drain {
        /// The server's process id (in its container, 1).
        #[arg(long, default_value_t = 1)]
        pid: i32,
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
    /// ICE/TCP media port (`rtc.tcp_port`, default 7881; 0 turns ICE/TCP off).
    #[arg(long)]
    tcp_port: Option<u16>,
    /// IP address advertised to clients for media (on Kubernetes, the host's IP from the
    /// downward API).
    #[arg(long, env = "NODE_IP")]
    node_ip: Option<IpAddr>,
    /// `relay.secret` (links between regions), kept out of the config file.
    #[arg(long, env = "PYLON_RELAY_SECRET", hide_env_values = true)]
    relay_secret: Option<String>,
    /// `redis.password`, kept out of the config file.
    #[arg(long, env = "PYLON_REDIS_PASSWORD", hide_env_values = true)]
    redis_password: Option<String>,
    /// `redis.sentinel_password`, kept out of the config file.
    #[arg(long, env = "PYLON_REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    redis_sentinel_password: Option<String>,
    /// API keys as "key: secret" pairs, comma separated.
    #[arg(long, env = "LIVEKIT_KEYS")]
    keys: Option<String>,
}

#[derive(Args)]
struct Credentials {
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    api_key: String,
    #[arg(
        long,
        env = "LIVEKIT_API_SECRET",
        default_value = "secret",
        hide_env_values = true
    )]
    api_secret: String,
}

#[derive(Args)]
struct ServerArgs {
    /// Server URL (http:// or ws://).
    #[arg(
        long,
        env = "LIVEKIT_URL",
        default_value = "http://127.0.0.1:7880",
        global = true
    )]
    url: String,
    #[command(flatten)]
    creds: Credentials,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// SIGTERM `pid` (which starts its drain) and wait until it is gone.
fn drain(pid: i32) -> anyhow::Result<()> {
    use rustix::process::{kill_process, test_kill_process, Pid, Signal};
    let pid = Pid::from_raw(pid).ok_or_else(|| anyhow::anyhow!("invalid pid {pid}"))?;
    kill_process(pid, Signal::TERM).map_err(|e| anyhow::anyhow!("signalling {pid:?}: {e}"))?;
    while test_kill_process(pid).is_ok() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a token (join grant by default).
    Create(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    creds: Credentials,
    /// Room the token is for.
    #[arg(long)]
    room: Option<String>,
    /// Participant identity.
    #[arg(long)]
    identity: Option<String>,
    /// Participant display name.
    #[arg(long)]
    name: Option<String>,
    /// Participant metadata.
    #[arg(long)]
    metadata: Option<String>,
    /// Grant roomJoin (default when no other grant is given).
    #[arg(long)]
    join: bool,
    /// Grant roomAdmin for --room.
    #[arg(long)]
    admin: bool,
    /// Grant roomCreate.
    #[arg(long)]
    create: bool,
    /// Grant roomList.
    #[arg(long)]
    list: bool,
    /// Deny publishing.
    #[arg(long)]
    no_publish: bool,
    /// Deny subscribing.
    #[arg(long)]
    no_subscribe: bool,
    /// Allow updating own metadata.
    #[arg(long)]
    allow_update_metadata: bool,
    /// Validity in seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    valid_for: i64,
}

#[derive(Subcommand)]
enum RoomCmd {
    /// List rooms.
    List,
    /// Create a room.
    Create {
        name: String,
        #[arg(long, default_value_t = 0)]
        empty_timeout: u32,
        #[arg(long, default_value_t = 0)]
        max_participants: u32,
        #[arg(long, default_value = "")]
        metadata: String,
    },
    /// Delete a room, disconnecting everyone in it.
    Delete { name: String },
}

#[derive(Subcommand)]
enum ParticipantCmd {
    /// List the participants of a room.
    List {
        #[arg(long)]
        room: String,
    },
    /// Remove a participant from a room.
    Remove {
        #[arg(long)]
        room: String,
        identity: String,
    },
    /// Mute one of a participant's published tracks.
    Mute {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        track_sid: String,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("pylon: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve(args) => serve(args),
        Cmd::Drain { pid } => drain(pid),
        Cmd::Token {
            cmd: TokenCmd::Create(args),
        } => {
            println!("{}", create_token(&args)?);
            Ok(())
        }
        Cmd::Room { server, cmd } => block_on(room(server, cmd)),
        Cmd::Participant { server, cmd } => block_on(participant(server, cmd)),
        Cmd::LoadTest(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(load_test::run(args)),
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        dev: args.dev,
        bind: args.bind,
        port: args.port,
        udp_port: args.udp_port,
        tcp_port: args.tcp_port,
        node_ip: args.node_ip,
        keys: args.keys,
        relay_secret: args.relay_secret,
        redis_password: args.redis_password,
        redis_sentinel_password: args.redis_sentinel_password,
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
        // Colours only on a terminal: log files and collectors get plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    for w in &config.warnings {
        tracing::warn!("config: {w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(pylon_server::run(config))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn create_token(a: &TokenArgs) -> anyhow::Result<String> {
    let join = a.join || !(a.admin || a.create || a.list);
    let room = a.room.clone().unwrap_or_default();
    if (join || a.admin) && room.is_empty() {
        anyhow::bail!("--room is required for a join or admin grant");
    }
    let identity = a.identity.clone().unwrap_or_default();
    if join && identity.is_empty() {
        anyhow::bail!("--identity is required for a join grant");
    }
    let now = unix_now();
    let claims = Claims {
        iss: a.creds.api_key.clone(),
        sub: identity,
        nbf: Some(now),
        exp: Some(now + a.valid_for),
        name: a.name.clone().unwrap_or_default(),
        metadata: a.metadata.clone().unwrap_or_default(),
        video: Some(VideoGrant {
            room_join: join,
            room_admin: a.admin,
            room_create: a.create,
            room_list: a.list,
            room,
            can_publish: a.no_publish.then_some(false),
            can_subscribe: a.no_subscribe.then_some(false),
            can_update_own_metadata: a.allow_update_metadata.then_some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(pylon_auth::mint(&claims, a.creds.api_secret.as_bytes()))
}

fn api(s: &ServerArgs) -> ApiClient {
    ApiClient {
        url: s.url.clone(),
        api_key: s.creds.api_key.clone(),
        api_secret: s.creds.api_secret.clone(),
    }
}

fn admin_grant(room: &str) -> VideoGrant {
    VideoGrant {
        room_admin: true,
        room: room.to_string(),
        ..Default::default()
    }
}

async fn room(s: ServerArgs, cmd: RoomCmd) -> anyhow::Result<()> {
    let c = api(&s);
    match cmd {
        RoomCmd::List => {
            let grant = VideoGrant {
                room_list: true,
                ..Default::default()
            };
            let r: lk::ListRoomsResponse = c
                .call("ListRooms", grant, &lk::ListRoomsRequest::default())
                .await?;
            if s.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let rows = r.rooms.iter().map(|r| {
                    vec![
                        r.sid.clone(),
                        r.name.clone(),
                        r.num_participants.to_string(),
                        r.num_publishers.to_string(),
                    ]
                });
                print_table(&["SID", "NAME", "PARTICIPANTS", "PUBLISHERS"], rows);
            }
        }
        RoomCmd::Create {
            name,
            empty_timeout,
            max_participants,
            metadata,
        } => {
            let grant = VideoGrant {
                room_create: true,
                ..Default::default()
            };
            let req = lk::CreateRoomRequest {
                name,
                empty_timeout,
                max_participants,
                metadata,
                ..Default::default()
            };
            let r: lk::Room = c.call("CreateRoom", grant, &req).await?;
            if s.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_table(&["SID", "NAME"], [vec![r.sid, r.name]]);
            }
        }
        RoomCmd::Delete { name } => {
            let grant = VideoGrant {
                room_create: true,
                ..Default::default()
            };
            let _: lk::DeleteRoomResponse = c
                .call("DeleteRoom", grant, &lk::DeleteRoomRequest { room: name.clone() })
                .await?;
            if s.json {
                println!("{}", serde_json::json!({ "deleted": name }));
            } else {
                println!("deleted room {name}");
            }
        }
    }
    Ok(())
}

async fn participant(s: ServerArgs, cmd: ParticipantCmd) -> anyhow::Result<()> {
    let c = api(&s);
    match cmd {
        ParticipantCmd::List { room } => {
            let req = lk::ListParticipantsRequest { room: room.clone() };
            let r: lk::ListParticipantsResponse =
                c.call("ListParticipants", admin_grant(&room), &req).await?;
            if s.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let rows = r.participants.iter().map(|p| {
                    let tracks = p
                        .tracks
                        .iter()
                        .map(|t| t.sid.clone())
                        .collect::<Vec<_>>()
                        .join(",");
                    let state = lk::participant_info::State::try_from(p.state)
                        .map(|s| s.as_str_name().to_string())
                        .unwrap_or_default();
                    vec![p.sid.clone(), p.identity.clone(), state, tracks]
                });
                print_table(&["SID", "IDENTITY", "STATE", "TRACKS"], rows);
            }
        }
        ParticipantCmd::Remove { room, identity } => {
            let req = lk::RoomParticipantIdentity {
                room: room.clone(),
                identity: identity.clone(),
                ..Default::default()
            };
            let _: lk::RemoveParticipantResponse =
                c.call("RemoveParticipant", admin_grant(&room), &req).await?;
            if s.json {
                println!("{}", serde_json::json!({ "removed": identity, "room": room }));
            } else {
                println!("removed {identity} from {room}");
            }
        }
        ParticipantCmd::Mute {
            room,
            identity,
            track_sid,
        } => {
            let req = lk::MuteRoomTrackRequest {
                room: room.clone(),
                identity,
                track_sid,
                muted: true,
            };
            let r: lk::MuteRoomTrackResponse = c.call("MutePublishedTrack", admin_grant(&room), &req).await?;
            if s.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let t = r.track.unwrap_or_default();
                print_table(&["TRACK", "MUTED"], [vec![t.sid, t.muted.to_string()]]);
            }
        }
    }
    Ok(())
}

fn print_table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}
