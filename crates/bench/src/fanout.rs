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
use crate::{percentile, proc_usage};

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

/// The load's shape.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// One publisher, N receivers.
    Fanout(usize),
    /// M publishers, each received by the M − 1 others (M × (M − 1) receivers).
    Meeting(usize),
    /// One RTMP publisher (our own, H.264 at 30 fps: `hls_latency::publish`) to the server's
    /// RTMP port, N WHEP receivers: the hub-to-WebRTC path, where the server packetizes the
    /// stream's frames for each viewer.
    Rtmp { receivers: usize, port: u16 },
}

impl Shape {
    fn receivers(self) -> usize {
        match self {
            Shape::Fanout(n) | Shape::Rtmp { receivers: n, .. } => n,
            Shape::Meeting(m) => m * m.saturating_sub(1),
        }
    }
}

/// Starts the server of `kind` ("onair" with the binary `bin`, or "janus") and runs the
/// scenario with `n` receivers.
pub fn fanout_on(kind: &str, n: usize, bin: &str, measure: Duration) -> Value {
    run_on(kind, Shape::Fanout(n), bin, measure)
}

/// Starts onair with its RTMP port open and runs `n` WHEP viewers of an RTMP stream.
pub fn rtmp_fanout(n: usize, bin: &str, measure: Duration) -> Value {
    let port = testkit::live::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = crate::LOAD_ENV.to_vec();
    env.push(("ONAIR_RTMP_LISTEN", &listen));
    let server = TestServer::start(bin, &env);
    run(
        Target::Onair(server),
        Shape::Rtmp { receivers: n, port },
        measure,
    )
}

/// Starts the server of `kind` and puts `shape` on it.
pub fn run_on(kind: &str, shape: Shape, bin: &str, measure: Duration) -> Value {
    let target = match kind {
        "janus" => match Janus::start() {
            Ok(j) => Target::Janus(j),
            Err(e) => return json!({"server": "janus", "error": e}),
        },
        _ => Target::Onair(TestServer::start(bin, crate::LOAD_ENV)),
    };
    run(target, shape, measure)
}

/// A current-thread runtime on a thread of its own, running `f`'s future.
fn on_thread<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
    failed: impl FnOnce(String) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(f()),
            Err(e) => failed(e.to_string()),
        }
    })
}

pub fn run(target: Target, shape: Shape, measure: Duration) -> Value {
    let _ = std::panic::catch_unwind(|| {
        sfu::str0m::crypto::from_feature_flags().install_process_default()
    });
    let n = shape.receivers();
    let pid = target.pid();
    let (_, rss_idle) = proc_usage(pid);
    let ramp = Duration::from_millis(20 * n as u64);
    let setup = Duration::from_secs(2) + ramp;
    let start = Instant::now();
    let until = start + setup + measure + Duration::from_secs(1);
    let publishers_until = until + Duration::from_secs(1);
    let http: SocketAddr = match &target {
        Target::Onair(s) => ([127, 0, 0, 1], s.http_port).into(),
        Target::Janus(j) => j.http,
    };
    let janus = matches!(target, Target::Janus(_));
    let publisher = match (&target, shape) {
        (Target::Janus(j), Shape::Fanout(_)) => {
            let (v, a) = (j.video_in, j.audio_in);
            std::thread::spawn(move || {
                janus::rtp_feeder(v, a, publishers_until, VIDEO_FRAME_BYTES);
                Ok(())
            })
        }
        (_, Shape::Fanout(_)) => on_thread(
            move || whip_publisher(http, "bench/fanout", publishers_until, VIDEO_FRAME_BYTES),
            Err,
        ),
        (_, Shape::Rtmp { port, .. }) => std::thread::spawn(move || {
            let rtmp: SocketAddr = ([127, 0, 0, 1], port).into();
            let secs = publishers_until.saturating_duration_since(Instant::now());
            crate::hls_latency::publish(rtmp, "bench", "rtmp", secs)
        }),
        (_, Shape::Meeting(m)) => on_thread(
            move || async move {
                let mut tasks = Vec::new();
                for i in 0..m {
                    let name = format!("p{i}");
                    tasks.push(if janus {
                        tokio::spawn(janus::room_publisher(
                            http,
                            name,
                            publishers_until,
                            VIDEO_FRAME_BYTES,
                        ))
                    } else {
                        tokio::spawn(async move {
                            whip_publisher(
                                http,
                                &format!("bench/{name}"),
                                publishers_until,
                                VIDEO_FRAME_BYTES,
                            )
                            .await
                        })
                    });
                }
                let mut first_error = Ok(());
                for t in tasks {
                    let r = t.await.unwrap_or_else(|e| Err(e.to_string()));
                    if first_error.is_ok() {
                        first_error = r;
                    }
                }
                first_error
            },
            Err,
        ),
    };
    // An RTMP stream has media once our publisher's handshake, connect, publish and first
    // keyframe are through; a WHEP offer before that is told to come back (503).
    let warm_up = match shape {
        Shape::Rtmp { .. } => 2_500,
        _ => 800,
    };
    std::thread::sleep(Duration::from_millis(warm_up));
    let receivers = on_thread(
        move || async move {
            let mut tasks = Vec::new();
            // Which stream or feed each receiver takes.
            let mut jobs: Vec<Option<u64>> = Vec::new();
            let mut names: Vec<String> = Vec::new();
            match shape {
                Shape::Fanout(n) => {
                    jobs.resize(n, None);
                    names.resize(n, "bench/fanout".into());
                }
                Shape::Rtmp { receivers: n, .. } => {
                    jobs.resize(n, None);
                    names.resize(n, "bench/rtmp".into());
                }
                Shape::Meeting(m) if janus => {
                    let mut feeds = Vec::new();
                    for _ in 0..50 {
                        feeds = janus::room_publishers(http).await.unwrap_or_default();
                        if feeds.len() >= m {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    for i in 0..m {
                        for (feed, name) in &feeds {
                            if *name != format!("p{i}") {
                                jobs.push(Some(*feed));
                                names.push(name.clone());
                            }
                        }
                    }
                }
                Shape::Meeting(m) => {
                    for i in 0..m {
                        for j in (0..m).filter(|&j| j != i) {
                            jobs.push(None);
                            names.push(format!("bench/p{j}"));
                        }
                    }
                }
            }
            for (job, name) in jobs.into_iter().zip(names) {
                tasks.push(match (janus, job) {
                    (true, Some(feed)) => tokio::spawn(janus::room_subscriber(http, feed, until)),
                    (true, None) => tokio::spawn(janus::receiver(http, until)),
                    (false, _) => {
                        tokio::spawn(async move { whep_receiver(http, &name, until).await })
                    }
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut out: Vec<Result<ReceiverReport, String>> = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
            }
            out
        },
        |_| Vec::new(),
    );
    std::thread::sleep((start + setup).saturating_duration_since(Instant::now()));
    // The window: the server's CPU, the generator's CPU, packets that reached receivers (counted
    // the same way for every server) and, for onair, what it says it sent.
    let me = std::process::id();
    // ONAIR_BENCH_CALLGRIND=1, with the server run under `valgrind --tool=callgrind`: its
    // counts are zeroed here and dumped at the window's end, so the dump is the window alone
    // (instructions per forwarded packet, repeatably; see docs/benchmarks.md).
    let callgrind = |op: &str| {
        if std::env::var_os("ONAIR_BENCH_CALLGRIND").is_some() {
            let _ = std::process::Command::new("callgrind_control")
                .args([op, &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .status();
        }
    };
    callgrind("-z");
    let (cpu0, _) = proc_usage(pid);
    let threads0 = crate::thread_usage(pid);
    let (gen0, _) = proc_usage(me);
    let rx0 = RECEIVED_PACKETS.load(Ordering::Relaxed);
    let out0 = server_counter(&target, "rtp_out");
    let in0 = server_counter(&target, "rtp_in");
    let t0 = Instant::now();
    std::thread::sleep(measure);
    let (cpu1, rss) = proc_usage(pid);
    let threads = crate::thread_usage_between(&threads0, &crate::thread_usage(pid));
    callgrind("-d");
    let (gen1, _) = proc_usage(me);
    let delivered = RECEIVED_PACKETS.load(Ordering::Relaxed).saturating_sub(rx0);
    let taken = server_counter(&target, "rtp_in")
        .zip(in0)
        .map(|(a, b)| a.saturating_sub(b));
    let sent = server_counter(&target, "rtp_out")
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
    let with_video = ok.iter().filter(|r| r.video_packets > 0).count();
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
        "scenario": match shape {
            Shape::Fanout(_) => "fanout",
            Shape::Meeting(_) => "meeting",
            Shape::Rtmp { .. } => "rtmp-fanout",
        },
        "shape": format!("{shape:?}"),
        "server": server,
        "receivers": n,
        "receivers_with_audio_and_video": with_media,
        "receivers_with_video": with_video,
        "receiver_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "publisher": published.map(|r| r.err()).unwrap_or(Some("panicked".into())),
        "measure_seconds": wall,
        "server_cpu_seconds": cpu,
        "server_cpu_percent_of_one_core": 100.0 * cpu / wall,
        // By thread (onair: `onair-media-N` are its media shards, `tokio-runtime-w` the
        // HTTP/signalling runtime's workers).
        "server_thread_cpu_seconds": threads,
        "generator_cpu_percent_of_one_core": 100.0 * generator_cpu / wall,
        "rtp_delivered": delivered,
        "rtp_delivered_per_cpu_second": per_cpu(delivered as f64),
        "rtp_sent_by_server": sent,
        "rtp_received_by_server": taken,
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

/// The same for an RTMP stream (video only): 10 WHEP receivers for 5 s, spread over the
/// server's media shards, each of which packetizes the stream once for its own; non-zero exit
/// if any receiver got no video or failed.
pub fn rtmp_smoke(bin: &str) -> i32 {
    let r = rtmp_fanout(10, bin, Duration::from_secs(5));
    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    let all = r["receivers_with_video"].as_u64() == Some(10);
    let clean = r["receiver_errors"].as_array().is_some_and(Vec::is_empty);
    if all && clean { 0 } else { 1 }
}

/// A counter from onair's /api/rooms (`rtp_in`, `rtp_out`); Janus has none on its public API.
fn server_counter(target: &Target, name: &str) -> Option<u64> {
    match target {
        Target::Onair(s) => Some(crate::rooms_counter(s.http_port, name)),
        Target::Janus(_) => None,
    }
}
