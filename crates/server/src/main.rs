//! `onair`: one binary that carries live audio and video.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use onair::access;
use onair::config::Config;

/// onair: a real-time media server (WebRTC SFU with WebSocket signalling).
///
/// Every configuration key is also an environment variable: `[media] port` is
/// `ONAIR_MEDIA_PORT`. Logs follow RUST_LOG (default `info`).
#[derive(Parser)]
#[command(name = "onair", version)]
struct Cli {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, short, global = true, env = "ONAIR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the default).
    Serve,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Mint an access token with the configured key (auth.keys).
    Token(TokenArgs),
    /// Token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCmd,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Print a new random key (base64url, 32 bytes) for auth.keys.
    Generate,
}

/// What the token grants. Room grants: `--room` with `--publish`/`--subscribe`/`--data`;
/// stream grants: `--publish-stream`/`--play-stream` (a name, or `prefix/*`).
#[derive(clap::Args)]
struct TokenArgs {
    /// Who the token is for (its `sub`).
    #[arg(long, default_value = "user")]
    identity: String,
    /// A display name.
    #[arg(long)]
    name: Option<String>,
    /// How long it is valid: seconds, or with a unit (90s, 30m, 12h, 7d).
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// The room it may join: a name, `prefix*` or `*`.
    #[arg(long)]
    room: Option<String>,
    /// Sources it may publish in the room (camera, microphone, screen, screen_audio), comma
    /// separated; `none` for a subscribe-only token. Absent: all.
    #[arg(long)]
    publish: Option<String>,
    /// It receives no tracks in the room.
    #[arg(long)]
    no_subscribe: bool,
    /// Its data channel messages are not relayed.
    #[arg(long)]
    no_data: bool,
    /// The others are not told of it (an observer, a recorder); it cannot publish.
    #[arg(long)]
    hidden: bool,
    /// A room admin: it may remove members of its room and mute their tracks.
    #[arg(long)]
    room_admin: bool,
    /// Stream names it may publish (WHIP …), repeatable.
    #[arg(long = "publish-stream")]
    publish_stream: Vec<String>,
    /// Stream names it may play (WHEP …), repeatable.
    #[arg(long = "play-stream")]
    play_stream: Vec<String>,
    /// The server's HTTP API.
    #[arg(long)]
    admin: bool,
    /// The key to sign with (its name in auth.keys); the first when absent.
    #[arg(long)]
    key: Option<String>,
}

/// `90`, `90s`, `30m`, `12h`, `7d` → seconds.
fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--ttl {s:?}: a number first"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => anyhow::bail!("--ttl {s:?}: unit {other:?} is not s, m, h or d"),
    };
    Ok(n.saturating_mul(mult))
}

fn mint(config: &Config, a: TokenArgs) -> anyhow::Result<String> {
    let keys = config.auth.keys()?;
    if keys.is_empty() {
        anyhow::bail!(
            "no key in auth.keys: `onair keys generate`, then put it in the configuration \
             (ONAIR_AUTH_KEYS='{{ main = \"KEY\" }}')"
        );
    }
    let now = access::now_unix();
    let room = a.room.map(|room| auth::RoomGrant {
        room,
        publish: a.publish.as_deref().map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "none")
                .map(str::to_owned)
                .collect()
        }),
        subscribe: !a.no_subscribe,
        data: !a.no_data,
        hidden: a.hidden,
        admin: a.room_admin,
    });
    let stream =
        (!a.publish_stream.is_empty() || !a.play_stream.is_empty()).then_some(auth::StreamGrant {
            publish: a.publish_stream,
            play: a.play_stream,
        });
    let claims = auth::Claims {
        sub: a.identity,
        name: a.name,
        exp: now.saturating_add(parse_ttl(&a.ttl)?),
        nbf: None,
        iat: Some(now),
        room,
        stream,
        admin: a.admin,
    };
    Ok(keys.mint(a.key.as_deref(), &claims)?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A key is made before there is a configuration to put it in (one listening beyond
    // loopback is refused without a key).
    if let Some(Cmd::Keys {
        command: KeysCmd::Generate,
    }) = cli.command
    {
        println!(
            "{}",
            auth::generate_key().map_err(|e| anyhow::anyhow!("no random bytes: {e}"))?
        );
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Config => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Cmd::Token(args) => {
            println!("{}", mint(&config, args)?);
            Ok(())
        }
        Cmd::Keys { .. } => Ok(()), // handled above
        Cmd::Serve => {
            use std::io::IsTerminal;
            tracing_subscriber::fmt()
                .with_ansi(std::io::stdout().is_terminal())
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        // turn-server-proto and stun-proto log every client's first,
                        // unauthenticated Allocate (the normal 401 round) as an error.
                        .unwrap_or_else(|_| "info,stun_proto=off,turn_server_proto=warn".into()),
                )
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(onair::app::serve(config))
        }
    }
}
