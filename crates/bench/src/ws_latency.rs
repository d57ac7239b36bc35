//! Scenario `ws-latency`: WebSocket streaming to many viewers: how late frames reach them, and
//! what each viewer costs the server. Side by side in one run, on one server and one stream:
//! RTWebSocket (the CMAF mapping), the plain WebSocket (`/ws/NAME`) and LL-HLS.
//!
//! The publisher is `hls-latency`'s: H.264 over RTMP at 30 fps (~1 Mbit/s), every frame
//! carrying an SEI with the wall-clock time it was written to the socket. A viewer's latency
//! for a frame = the time its fragment arrived − that SEI time (one machine, one clock). The
//! LL-HLS figure is `hls-latency`'s availability latency (a part at the live edge, fetched as
//! soon as it exists), for scale.
//!
//! The cost: the server's CPU seconds and resident memory while N viewers of one kind watch,
//! against a window with none just before, on a fresh server per kind; memory per viewer =
//! (RSS with them − RSS without) / N.
//! The viewers are ours, in Rust: `rtws::Connection` (sans-IO) over tokio-tungstenite, acking
//! as a browser player would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use testkit::live::free_port;
use testkit::server::TestServer;
use tokio_tungstenite::tungstenite::Message;

use crate::hls_latency::{publish, stamps, wall_us};
use crate::proc_usage;

/// Frames whose latency is kept per viewer kind (all viewers together).
type Latencies = Arc<Mutex<Vec<f64>>>;

/// One kind's run on a server of its own (so memory one kind leaves allocated does not count
/// against the other): the server idle with the publish, then with `viewers` watching; for
/// RTWebSocket also the LL-HLS availability latency, on the same server and stream.
struct Phase {
    idle: Window,
    watched: Window,
    hls: Option<Result<crate::hls_latency::Measured, String>>,
}

fn phase(bin: &str, kind: Kind, viewers: usize, secs: Duration) -> Result<Phase, String> {
    let rtmp_port = free_port();
    let listen = format!("127.0.0.1:{rtmp_port}");
    let server = TestServer::start(bin, &[("ONAIR_RTMP_LISTEN", &listen)]);
    let rtmp: SocketAddr = ([127, 0, 0, 1], rtmp_port).into();
    let total = secs * 2 + Duration::from_secs(15);
    let publisher = std::thread::spawn(move || publish(rtmp, "live", "lat", total));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let (port, pid) = (server.http_port, server.pid());
    // The stream needs a moment (and its first keyframe) before anyone can play it.
    std::thread::sleep(Duration::from_secs(3));
    let idle = window(pid, Duration::from_secs(4));
    let watched = rt.block_on(watchers(port, pid, viewers, secs, kind));
    let hls = (kind == Kind::Rtws).then(|| crate::hls_latency::measure(port, "live/lat", secs));
    let _ = publisher.join();
    drop(server);
    Ok(Phase { idle, watched, hls })
}

/// Runs the scenario with `viewers` of each kind for `secs` each; prints JSON; 0 when every
/// kind measured frames.
pub fn run(bin: &str, viewers: usize, secs: Duration) -> i32 {
    let (rtws, plain) = match (
        phase(bin, Kind::Rtws, viewers, secs),
        phase(bin, Kind::Plain, viewers, secs),
    ) {
        (Ok(r), Ok(p)) => (r, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("ws-latency: {e}");
            return 1;
        }
    };
    let cpu_pct = |w: &Window| 100.0 * w.cpu_s / w.wall_s;
    let per_viewer_kib =
        |p: &Phase| (p.watched.rss_kib as f64 - p.idle.rss_kib as f64) / viewers as f64;
    let kind_report = |p: &Phase| {
        let mut l = p.watched.latencies.clone();
        json!({
            "frames": l.len(),
            "latency_ms": { "median": q(&mut l, 0.5), "p95": q(&mut l, 0.95), "p99": q(&mut l, 0.99), "max": q(&mut l, 1.0) },
            "server_idle": { "cpu_pct_of_a_core": cpu_pct(&p.idle), "rss_mib": p.idle.rss_kib as f64 / 1024.0 },
            "server_cpu_pct_of_a_core": cpu_pct(&p.watched),
            "server_cpu_pct_per_100_viewers": (cpu_pct(&p.watched) - cpu_pct(&p.idle)) * 100.0 / viewers as f64,
            "server_rss_mib": p.watched.rss_kib as f64 / 1024.0,
            "memory_per_viewer_kib": per_viewer_kib(p),
            "connected": p.watched.connected,
        })
    };
    let hls = rtws.hls.as_ref();
    let hls_report = match hls {
        Some(Ok(m)) => {
            let mut all = m.all.clone();
            json!({ "clients": 1, "frames": all.len(), "latency_ms": { "median": q(&mut all, 0.5), "p95": q(&mut all, 0.95), "max": q(&mut all, 1.0) } })
        }
        Some(Err(e)) => json!({ "error": e }),
        None => json!(null),
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let median = |w: &Window| q(&mut w.latencies.clone(), 0.5);
    let hls_median = match hls {
        Some(Ok(m)) => q(&mut m.all.clone(), 0.5),
        _ => f64::NAN,
    };
    let report = json!({
        "scenario": "ws-latency",
        "viewers": viewers,
        "seconds_each": secs.as_secs(),
        "rtws_cmaf": kind_report(&rtws),
        "plain_websocket": kind_report(&plain),
        "ll_hls": hls_report,
        "ratios": {
            "rtws_median_latency_vs_ll_hls": ratio(median(&rtws.watched), hls_median),
            "rtws_median_latency_vs_plain": ratio(median(&rtws.watched), median(&plain.watched)),
            "rtws_memory_per_viewer_vs_plain": ratio(per_viewer_kib(&rtws), per_viewer_kib(&plain)),
        },
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    let ok = !rtws.watched.latencies.is_empty()
        && !plain.watched.latencies.is_empty()
        && matches!(hls, Some(Ok(_)));
    if ok { 0 } else { 1 }
}

fn q(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rtws,
    Plain,
}

/// What the server did in a window, and what the viewers saw.
struct Window {
    cpu_s: f64,
    wall_s: f64,
    rss_kib: u64,
    latencies: Vec<f64>,
    connected: usize,
}

fn window(pid: u32, d: Duration) -> Window {
    let (c0, _) = proc_usage(pid);
    let t0 = Instant::now();
    std::thread::sleep(d);
    let (c1, rss) = proc_usage(pid);
    Window {
        cpu_s: c1 - c0,
        wall_s: t0.elapsed().as_secs_f64(),
        rss_kib: rss,
        latencies: Vec::new(),
        connected: 0,
    }
}

/// `n` viewers of `kind` for `secs` (after 2 s to settle, not measured).
async fn watchers(port: u16, pid: u32, n: usize, secs: Duration, kind: Kind) -> Window {
    let lat: Latencies = Arc::default();
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (lat, measuring, connected) = (lat.clone(), measuring.clone(), connected.clone());
        tasks.push(tokio::spawn(async move {
            let r = match kind {
                Kind::Rtws => rtws_viewer(port, &lat, &measuring, &connected).await,
                Kind::Plain => plain_viewer(port, &lat, &measuring, &connected).await,
            };
            if let Err(e) = r {
                eprintln!("ws-latency: viewer: {e}");
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let (c0, _) = proc_usage(pid);
    let t0 = Instant::now();
    tokio::time::sleep(secs).await;
    let (c1, rss) = proc_usage(pid);
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    let latencies = lat.lock().map(|v| v.clone()).unwrap_or_default();
    Window {
        cpu_s: c1 - c0,
        wall_s: t0.elapsed().as_secs_f64(),
        rss_kib: rss,
        latencies,
        connected: connected.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Records the SEI latencies of one fragment, when measuring.
fn record(lat: &Latencies, measuring: &std::sync::atomic::AtomicBool, data: &[u8]) {
    if !measuring.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let now = wall_us();
    if let Ok(mut v) = lat.lock() {
        for t in stamps(data) {
            v.push(now.saturating_sub(t) as f64 / 1000.0);
        }
    }
}

type Error = String;

/// One RTWebSocket viewer of the CMAF mapping: opens the request, acks what comes.
async fn rtws_viewer(
    port: u16,
    lat: &Latencies,
    measuring: &std::sync::atomic::AtomicBool,
    connected: &std::sync::atomic::AtomicUsize,
) -> Result<(), Error> {
    let url = format!("ws://127.0.0.1:{port}/rtws/live");
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (mut tx, mut rx) = ws.split();
    let mut conn = rtws::Connection::new(rtws::Config::default());
    conn.open(0, 3, None, b"CMAFlat");
    loop {
        while let Some(m) = conn.poll_transmit(Instant::now()) {
            tx.send(Message::Binary(m.into()))
                .await
                .map_err(|e| format!("send: {e}"))?;
        }
        let wake = conn
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    conn.receive(Instant::now(), &b).map_err(|e| format!("rtws: {e}"))?;
                    while let Some(ev) = conn.poll_event() {
                        if let rtws::Event::Message { data, .. } = ev
                            && data.first() == Some(&b'f')
                        {
                            record(lat, measuring, &data);
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
            _ = tokio::time::sleep_until(wake) => conn.handle_timeout(Instant::now()),
        }
    }
}

/// One plain-WebSocket viewer.
async fn plain_viewer(
    port: u16,
    lat: &Latencies,
    measuring: &std::sync::atomic::AtomicBool,
    connected: &std::sync::atomic::AtomicUsize,
) -> Result<(), Error> {
    let url = format!("ws://127.0.0.1:{port}/ws/live/lat");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    while let Some(m) = ws.next().await {
        match m {
            Ok(Message::Binary(b)) if b.get(1) == Some(&b'f') => record(lat, measuring, &b),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}
