//! `onair`: one binary that carries live audio and video.

mod access;
mod admin_api;
mod config;
mod engine;
mod flv_publish;
mod hls_aac;
mod hls_http;
mod http;
mod http_accept;
mod ice_servers;
mod limits;
mod media_loop;
mod metrics;
mod net;
mod queues;
mod recording;
mod rtmp_server;
mod rtws_cmaf;
mod rtws_server;
mod streams;
mod tls;
mod turn_server;
mod web;
mod webhooks;
mod whip;
mod ws_plain;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{info, warn};

use crate::config::Config;

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
                .block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let hub = hub::Hub::new(config.hub());
    // The operator's webhooks: none unless webhooks.urls names receivers.
    let hooks = if config.webhooks.urls.is_empty() {
        webhooks::Webhooks::none()
    } else {
        info!(receivers = config.webhooks.urls.len(), "webhooks on");
        webhooks::Webhooks::start(config.webhooks.settings())
    };
    tokio::spawn(webhooks::watch_streams(hooks.clone(), hub.clone()));
    let secret = if config.turn.secret.is_empty() {
        ice_servers::random_secret().context("a random TURN secret")?
    } else {
        config.turn.secret.clone()
    };
    let ice = std::sync::Arc::new(ice_servers::IceServers::new(&config, &secret));
    let turn_counters = std::sync::Arc::new(turn_server::TurnCounters::default());
    let media = engine::start(
        &config,
        hub.clone(),
        ice,
        turn_counters.clone(),
        hooks.clone(),
    )
    .await?;
    let turn_addr = turn_server::start(
        &config,
        &secret,
        media.clone(),
        turn_counters,
        media.limits.clone(),
    )
    .await?;
    let rtmp_addr = rtmp_server::start(
        &config,
        hub.clone(),
        media.auth.clone(),
        media.limits.clone(),
    )
    .await?;
    let hls = hls_http::start(&config, hub.clone());
    let recorder = recording::start(&config, hub.clone(), hooks.clone());
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding HTTP {}", config.http.listen))?;
    let mut http_addr = listener.local_addr()?;
    if http_addr.ip().is_unspecified() {
        // Listening everywhere: show a URL that opens on this machine.
        http_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let https = if config.http.tls_cert.is_empty() {
        None
    } else {
        let tls = tls::load(
            Some(std::path::Path::new(&config.http.tls_cert)),
            Some(std::path::Path::new(&config.http.tls_key)),
            &[],
        )
        .context("http.tls_cert / http.tls_key")?;
        Some(http_accept::acceptor(&tls.config))
    };
    let (scheme, ws) = if https.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let shards = media.shard_count() as u16;
    info!(
        "onair {} — media on udp/{}{} ({} shard{}, ICE-TCP {})",
        env!("CARGO_PKG_VERSION"),
        config.media.port,
        if shards > 1 {
            format!("-{}", config.media.port + shards - 1)
        } else {
            String::new()
        },
        shards,
        if shards > 1 { "s" } else { "" },
        if config.media.ice_tcp { "on" } else { "off" }
    );
    println!("onair is running:");
    println!("  home       {scheme}://{http_addr}/");
    println!("  room       {scheme}://{http_addr}/room.html?room=demo");
    println!("  signalling {ws}://{http_addr}/rtc");
    println!(
        "  publish    {scheme}://{http_addr}/publish.html?stream=live/demo   (WHIP: POST {scheme}://{http_addr}/whip/NAME)"
    );
    println!(
        "  watch      {scheme}://{http_addr}/watch.html?stream=live/demo     (WHEP: POST {scheme}://{http_addr}/whep/NAME)"
    );
    if let Some(a) = turn_addr {
        let tls: String = config
            .turn
            .tls_ports
            .iter()
            .map(|p| format!(", tls/{p}"))
            .collect();
        let v6 = if config.turn_bind_v6().is_some() {
            ", IPv6"
        } else {
            ""
        };
        println!(
            "  STUN/TURN  {a} udp+tcp{tls}{v6}   (credentials: GET {scheme}://{http_addr}/api/ice-servers)"
        );
    }
    if let Some(a) = rtmp_addr {
        println!("  RTMP       rtmp://{a}/live/KEY   (plays as stream live/KEY)");
    }
    if config.hls.enabled {
        println!("  LL-HLS     {scheme}://{http_addr}/hls/NAME/index.m3u8   (every stream)");
    }
    if config.recording.enabled {
        println!(
            "  recording  {:?} → {}   (GET {scheme}://{http_addr}/api/recordings)",
            config.recording.streams, config.recording.dir
        );
    }
    for w in config.production_warnings() {
        warn!("production: {w}");
    }
    for v in config::unknown_env_vars(std::env::vars().map(|(k, _)| k)) {
        warn!("{v} is set but names no configuration key (see `onair config`)");
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut app = http::router(media.clone())
        .merge(rtws_server::router(
            hub.clone(),
            config.rtmp.transcode_audio,
            media.auth.clone(),
            media.limits.settings.auth_deadline,
        ))
        .merge(ws_plain::router(hub.clone(), media.auth.clone()));
    if let Some(hls) = hls {
        app = app.merge(hls_http::router(hls, media.auth.clone()));
    }
    if let Some(r) = recorder {
        app = app.merge(recording::router(r));
    }
    // With auth.keys: the operator's API, metrics and recordings need an admin token.
    let app = app.layer(axum::middleware::from_fn_with_state(
        (media.auth.clone(), config.auth.open_metrics),
        access::guard,
    ));
    // Outermost: a request over its address's rate is answered before anything else runs.
    let app = app.layer(axum::middleware::from_fn_with_state(
        media.limits.clone(),
        limits::rate,
    ));
    let stop = async {
        let _ = stop_rx.await;
    };
    // Plain HTTP also takes HTTP/2 from clients that start with it (h2c, prior knowledge).
    let server = tokio::spawn(http_accept::serve(
        listener,
        https,
        app,
        media.limits.clone(),
        stop,
    ));

    shutdown_signal().await;
    info!("stopping");
    media.shutdown(std::time::Duration::from_secs(2)).await;
    // Give signalling tasks a moment to deliver `bye` and close frames.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), server).await;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
