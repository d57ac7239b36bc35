//! The server started: every front-end on its sockets, sharing one stream hub, until a signal
//! stops it.

use anyhow::Context;
use tracing::{info, warn};

use crate::config::Config;
use crate::turn::ice_servers;
use crate::webrtc::engine;
use crate::{access, config, limits};
use crate::{http, recording, tls, webhooks};

/// Runs the server with `config` until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
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
    let turn_counters = std::sync::Arc::new(crate::turn::TurnCounters::default());
    let media = engine::start(
        &config,
        hub.clone(),
        ice,
        turn_counters.clone(),
        hooks.clone(),
    )
    .await?;
    let turn_addr = crate::turn::start(
        &config,
        &secret,
        media.clone(),
        turn_counters,
        media.limits.clone(),
    )
    .await?;
    let rtmp_addr = crate::rtmp::start(
        &config,
        hub.clone(),
        media.auth.clone(),
        media.limits.clone(),
    )
    .await?;
    let hls = crate::hls::start(&config, hub.clone());
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
        Some(http::accept::acceptor(&tls.config))
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
        .merge(crate::ws::rtws::router(
            hub.clone(),
            config.rtmp.transcode_audio,
            media.auth.clone(),
            media.limits.settings.auth_deadline,
        ))
        .merge(crate::ws::plain::router(hub.clone(), media.auth.clone()));
    if let Some(hls) = hls {
        app = app.merge(crate::hls::router(hls, media.auth.clone()));
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
    let server = tokio::spawn(http::accept::serve(
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
