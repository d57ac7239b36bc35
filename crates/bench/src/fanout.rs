//! Scenario `fanout`: one publisher (~1.5 Mbit/s of synthetic VP8 at 30 fps, and Opus stamped
//! with its send time) fanned out to N receivers, all in this process on loopback, against onair
//! (WHIP in, WHEP out) or Janus (plain RTP into a streaming mountpoint, its HTTP API out).
//! Receivers run as tasks on one thread; they do ICE and DTLS-SRTP, then count, order-check and
//! time packets without decoding. They join 20 ms apart, so 200 of them are a join storm (4 s).
//! Reported: server CPU, packets delivered per server CPU-second, Mbit/s per core, loss, audio
//! latency added by the server (p50/p99), the share of receivers whose handshake completed and
//! their time to first packet, RSS per receiver, and the load generator's own CPU (if it nears
//! a core, the generator, not the server, was the limit).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::server::TestServer;
use testkit::whep::{RECEIVED_PACKETS, ReceiverReport, whep_receiver, whip_publisher};

use crate::janus::{self, Janus};
use crate::{percentile, proc_usage, rtp_out};

/// 1.5 Mbit/s at 30 fps.
const VIDEO_FRAME_BYTES: usize = 6_250;

/// The server under load.
pub enum Target {
    /// onair: WHIP publisher, WHEP receivers.
    Onair(TestServer),
    /// Janus: plain RTP into the streaming plugin, receivers over its HTTP API.
    Janus(Janus),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Onair(_) => "onair",
            Target::Janus(_) => "janus",
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Target::Onair(s) => s.pid(),
            Target::Janus(j) => j.pid(),
        }
    }
}

/// Starts the server of `kind` ("onair" with the binary `bin`, or "janus") and runs the
/// scenario with `n` receivers.
pub fn fanout_on(kind: &str, n: usize, bin: &str, measure: Duration) -> Value {
    let target = match kind {
        "janus" => match Janus::start() {
            Ok(j) => Target::Janus(j),
            Err(e) => return json!({"server": "janus", "error": e}),
        },
        _ => Target::Onair(TestServer::start(bin, &[])),
    };
    fanout(target, n, measure)
}

pub fn fanout(target: Target, n: usize, measure: Duration) -> Value {
    let _ = std::panic::catch_unwind(|| {
        sfu::str0m::crypto::from_feature_flags().install_process_default()
    });
    let pid = target.pid();
    let (_, rss_idle) = proc_usage(pid);
    let ramp = Duration::from_millis(20 * n as u64);
    let setup = Duration::from_secs(2) + ramp;
    let start = Instant::now();
    let until = start + setup + measure + Duration::from_secs(1);
    let publisher = match &target {
        Target::Onair(server) => {
            let http: SocketAddr = ([127, 0, 0, 1], server.http_port).into();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(whip_publisher(
                        http,
                        "bench/fanout",
                        until + Duration::from_secs(1),
                        VIDEO_FRAME_BYTES,
                    )),
                    Err(e) => Err(e.to_string()),
                }
            })
        }
        Target::Janus(j) => {
            let (v, a) = (j.video_in, j.audio_in);
            std::thread::spawn(move || {
                janus::rtp_feeder(v, a, until + Duration::from_secs(1), VIDEO_FRAME_BYTES);
                Ok(())
            })
        }
    };
    let http: SocketAddr = match &target {
        Target::Onair(s) => ([127, 0, 0, 1], s.http_port).into(),
        Target::Janus(j) => j.http,
    };
    let janus = matches!(target, Target::Janus(_));
    std::thread::sleep(Duration::from_millis(800));
    let receivers = std::thread::spawn(move || -> Vec<Result<ReceiverReport, String>> {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return Vec::new();
        };
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                tasks.push(if janus {
                    tokio::spawn(janus::receiver(http, until))
                } else {
                    tokio::spawn(whep_receiver(http, "bench/fanout", until))
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
            }
            out
        })
    });
    std::thread::sleep((start + setup).saturating_duration_since(Instant::now()));
    // The window: the server's CPU, the generator's CPU, packets that reached receivers (counted
    // the same way for every server) and, for onair, what it says it sent.
    let me = std::process::id();
    let (cpu0, _) = proc_usage(pid);
    let (gen0, _) = proc_usage(me);
    let rx0 = RECEIVED_PACKETS.load(Ordering::Relaxed);
    let out0 = server_rtp_out(&target);
    let t0 = Instant::now();
    std::thread::sleep(measure);
    let (cpu1, rss) = proc_usage(pid);
    let (gen1, _) = proc_usage(me);
    let delivered = RECEIVED_PACKETS.load(Ordering::Relaxed).saturating_sub(rx0);
    let sent = server_rtp_out(&target)
        .zip(out0)
        .map(|(a, b)| a.saturating_sub(b));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu1 - cpu0;
    let generator_cpu = gen1 - gen0;
    let reports = receivers.join().unwrap_or_default();
    let published = publisher.join();
    let server = target.name();
    drop(target);

    let ok: Vec<&ReceiverReport> = reports.iter().filter_map(|r| r.as_ref().ok()).collect();
    let errors: Vec<&String> = reports
        .iter()
        .filter_map(|r| r.as_ref().err())
        .chain(ok.iter().filter_map(|r| r.error.as_ref()))
        .collect();
    let with_media = ok
        .iter()
        .filter(|r| r.video_packets > 0 && r.audio_packets > 0)
        .count();
    let received: u64 = ok.iter().map(|r| r.audio_packets + r.video_packets).sum();
    let missing: u64 = ok.iter().map(|r| r.missing).sum();
    let bytes: u64 = ok.iter().map(|r| r.bytes).sum();
    let mut lat: Vec<u64> = ok
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let mut first: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.first_packet.map(|d| d.as_secs_f64() * 1000.0))
        .collect();
    first.sort_by(f64::total_cmp);
    let (pick, pickf) = (percentile::<u64>, percentile::<f64>);
    // Receivers' bytes cover their whole session; scale to the window by packets.
    let window_share = if received > 0 {
        delivered as f64 / received as f64
    } else {
        0.0
    };
    let per_cpu = |x: f64| if cpu > 0.0 { x / cpu } else { f64::NAN };
    json!({
        "scenario": "fanout",
        "server": server,
        "receivers": n,
        "receivers_with_audio_and_video": with_media,
        "receiver_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "publisher": published.map(|r| r.err()).unwrap_or(Some("panicked".into())),
        "measure_seconds": wall,
        "server_cpu_seconds": cpu,
        "server_cpu_percent_of_one_core": 100.0 * cpu / wall,
        "generator_cpu_percent_of_one_core": 100.0 * generator_cpu / wall,
        "rtp_delivered": delivered,
        "rtp_delivered_per_cpu_second": per_cpu(delivered as f64),
        "rtp_sent_by_server": sent,
        "mbit_per_core_second": per_cpu(bytes as f64 * window_share * 8.0 / 1e6),
        "loss_percent": if received + missing > 0 { 100.0 * missing as f64 / (received + missing) as f64 } else { f64::NAN },
        "audio_latency_us": {"p50": pick(&lat, 0.5), "p99": pick(&lat, 0.99)},
        // All receivers join 20 ms apart (200 in 4 s: a join storm): how many completed ICE and
        // DTLS-SRTP and got media, and how long after their POST.
        "handshake_success_percent": 100.0 * first.len() as f64 / n.max(1) as f64,
        "first_packet_ms": {
            "p50": pickf(&first, 0.5),
            "p90": pickf(&first, 0.9),
            "p99": pickf(&first, 0.99),
            "max": pickf(&first, 1.0),
        },
        "rss_per_receiver_kib": rss.saturating_sub(rss_idle) as f64 / n.max(1) as f64,
    })
}

/// A short run proving the tool works: 10 receivers for 10 s; non-zero exit if any of them got
/// no audio or no video, or the publisher failed.
pub fn smoke(bin: &str) -> i32 {
    let r = fanout_on("onair", 10, bin, Duration::from_secs(10));
    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    let all = r["receivers_with_audio_and_video"].as_u64() == Some(10);
    let publisher_ok = r["publisher"].is_null();
    if all && publisher_ok { 0 } else { 1 }
}

/// What onair says it sent (from /api/rooms); Janus has no such counter on its public API.
fn server_rtp_out(target: &Target) -> Option<u64> {
    match target {
        Target::Onair(s) => Some(rtp_out(s.http_port)),
        Target::Janus(_) => None,
    }
}
