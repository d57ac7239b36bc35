//! Scenario `whep-fanout`: one WHIP publisher (~1.5 Mbit/s of synthetic VP8 at 30 fps, and Opus
//! stamped with its send time) fanned out to N WHEP receivers, all in this process on loopback.
//! Receivers run as tasks on one thread; they count, order-check and time packets without
//! decoding. Receivers join 20 ms apart, so 200 of them are a join storm (4 s). Reported: server
//! CPU and forwarded packets per CPU-second (from /proc and /api/rooms), Mbit/s per core, loss,
//! audio latency added by the server (p50/p99), the share of receivers whose handshake
//! completed and their time to first packet, RSS per receiver.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::server::TestServer;
use testkit::whep::{ReceiverReport, whep_receiver, whip_publisher};

use crate::{Window, measure_window, percentile, proc_usage};

/// 1.5 Mbit/s at 30 fps.
const VIDEO_FRAME_BYTES: usize = 6_250;

pub fn fanout(n: usize, bin: &str, measure: Duration) -> Value {
    let _ = std::panic::catch_unwind(|| {
        sfu::str0m::crypto::from_feature_flags().install_process_default()
    });
    let server = TestServer::start(bin, &[]);
    let pid = server.pid();
    let http: SocketAddr = ([127, 0, 0, 1], server.http_port).into();
    let (_, rss_idle) = proc_usage(pid);
    let ramp = Duration::from_millis(20 * n as u64);
    let setup = Duration::from_secs(2) + ramp;
    let start = Instant::now();
    let until = start + setup + measure + Duration::from_secs(1);
    let publisher = std::thread::spawn(move || {
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
    });
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
                tasks.push(tokio::spawn(whep_receiver(http, "bench/fanout", until)));
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
    let Window {
        cpu,
        forwarded,
        rss,
        wall,
    } = measure_window(pid, server.http_port, measure);
    let reports = receivers.join().unwrap_or_default();
    let published = publisher.join();
    let _ = server.stop();

    let ok: Vec<&ReceiverReport> = reports.iter().filter_map(|r| r.as_ref().ok()).collect();
    let errors: Vec<&String> = reports.iter().filter_map(|r| r.as_ref().err()).collect();
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
        forwarded as f64 / received as f64
    } else {
        0.0
    };
    json!({
        "scenario": "whep-fanout",
        "receivers": n,
        "receivers_with_audio_and_video": with_media,
        "receiver_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "publisher": published.map(|r| r.err()).unwrap_or(Some("panicked".into())),
        "measure_seconds": wall,
        "server_cpu_seconds": cpu,
        "server_cpu_percent_of_one_core": 100.0 * cpu / wall,
        "rtp_forwarded": forwarded,
        "rtp_forwarded_per_cpu_second": if cpu > 0.0 { forwarded as f64 / cpu } else { f64::NAN },
        "mbit_per_core_second": if cpu > 0.0 { bytes as f64 * window_share * 8.0 / 1e6 / cpu } else { f64::NAN },
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
    let r = fanout(10, bin, Duration::from_secs(10));
    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    let all = r["receivers_with_audio_and_video"].as_u64() == Some(10);
    let publisher_ok = r["publisher"].is_null();
    if all && publisher_ok { 0 } else { 1 }
}
