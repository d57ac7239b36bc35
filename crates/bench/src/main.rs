//! `onair-bench`: load against a running onair binary, figures printed as JSON.
//!
//! Scenario `fanout`: one Rust test peer publishes synthetic VP8 (30 fps, ~0.4 Mbit/s) and Opus
//! to N subscribing test peers over loopback. Reported: time from `join` to the first complete
//! video frame for each subscriber, the server's CPU seconds (from /proc) while all are
//! connected, RTP packets it forwarded per CPU-second, and its resident memory per subscriber.
//!
//! Run inside the loopback-only namespace:
//! `../shared/tools/netns-run target/release/onair-bench fanout 50 target/release/onair`

use std::time::{Duration, Instant};

use testkit::Publish;
use testkit::live::{LiveOptions, spawn};
use testkit::server::TestServer;

mod compare;
mod fanout;
mod hls_latency;
mod janus;
mod plot;
mod ws_latency;

/// The server's settings for a load run: one address makes hundreds of sessions in seconds,
/// which the abuse limits (`limits.*`) would rightly refuse from a stranger.
pub(crate) const LOAD_ENV: &[(&str, &str)] = &[
    ("ONAIR_ROOMS_MAX_PARTICIPANTS", "1000"),
    ("ONAIR_LIMITS_REQUESTS_PER_SECOND", "100000"),
    ("ONAIR_LIMITS_REQUEST_BURST", "100000"),
    ("ONAIR_LIMITS_CONNECTIONS_PER_IP", "100000"),
];

fn main() {
    // RUST_LOG=str0m=debug shows the load generator's peers at work.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: onair-bench fanout N PATH_TO_ONAIR [SECONDS]\n       \
                 onair-bench whep-fanout N[,N...] PATH_TO_ONAIR [SECONDS]\n       \
                 onair-bench rtmp-fanout N[,N...] PATH_TO_ONAIR [SECONDS]\n       \
                 onair-bench janus-fanout N[,N...] [SECONDS]\n       \
                 onair-bench compare N[,N...] PATH_TO_ONAIR [SECONDS] [OUT_DIR]\n       \
                 onair-bench meeting M PATH_TO_ONAIR [SECONDS]\n       \
                 onair-bench compare-meeting M[,M...] PATH_TO_ONAIR [SECONDS]\n       \
                 onair-bench smoke PATH_TO_ONAIR\n       \
                 onair-bench rtmp-smoke PATH_TO_ONAIR\n       \
                 onair-bench hls-latency PATH_TO_ONAIR [SECONDS]\n       \
                 onair-bench ws-latency N PATH_TO_ONAIR [SECONDS]";
    if args.len() >= 3 && args[1] == "hls-latency" {
        let secs = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
        std::process::exit(hls_latency::run(&args[2], Duration::from_secs(secs)));
    }
    if args.len() >= 4 && args[1] == "ws-latency" {
        let n = args[2].parse().unwrap_or(100);
        let secs = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(10);
        std::process::exit(ws_latency::run(&args[3], n, Duration::from_secs(secs)));
    }
    if args.len() >= 3 && args[1] == "smoke" {
        std::process::exit(fanout::smoke(&args[2]));
    }
    if args.len() >= 3 && args[1] == "rtmp-smoke" {
        std::process::exit(fanout::rtmp_smoke(&args[2]));
    }
    let steps = |a: &str| -> Vec<usize> { a.split(',').filter_map(|n| n.parse().ok()).collect() };
    let secs_at =
        |i: usize| Duration::from_secs(args.get(i).and_then(|s| s.parse().ok()).unwrap_or(10));
    if args.len() >= 4 && args[1] == "whep-fanout" {
        for n in steps(&args[2]) {
            let r = fanout::fanout_on("onair", n, &args[3], secs_at(4));
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        return;
    }
    if args.len() >= 4 && args[1] == "rtmp-fanout" {
        for n in steps(&args[2]) {
            let r = fanout::rtmp_fanout(n, &args[3], secs_at(4));
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        return;
    }
    if args.len() >= 3 && args[1] == "janus-fanout" {
        for n in steps(&args[2]) {
            let r = fanout::fanout_on("janus", n, "", secs_at(3));
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        return;
    }
    if args.len() >= 4 && args[1] == "compare" {
        let out = args.get(5).map_or("target/bench", String::as_str);
        std::process::exit(compare::run(&steps(&args[2]), &args[3], secs_at(4), out));
    }
    if args.len() >= 4 && args[1] == "compare-meeting" {
        for m in steps(&args[2]) {
            for kind in ["onair", "janus"] {
                let r = fanout::run_on(kind, fanout::Shape::Meeting(m), &args[3], secs_at(4));
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            }
        }
        return;
    }
    if args.len() >= 4 && args[1] == "meeting" {
        let m = args[2].parse().unwrap_or(4);
        meeting(m, &args[3], secs_at(4));
        return;
    }
    if args.len() < 4 || args[1] != "fanout" {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let n: usize = args[2].parse().unwrap_or_else(|_| {
        eprintln!("{usage}");
        std::process::exit(2)
    });
    let secs: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(10);
    fanout(n, &args[3], Duration::from_secs(secs));
}

/// (utime + stime) in seconds, and VmRSS in KiB, of a process.
pub(crate) fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

/// CPU seconds (user + system) of each thread of a process, by thread name (`comm`, less a
/// trailing ` <number>`; several threads may share one, as tokio's workers do: their seconds are
/// added up).
pub(crate) fn thread_usage(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        // Janus names each session's thread `hloop <id>`: one entry for all of them.
        let comm = &stat[open + 1..close];
        let name = match comm.rsplit_once(' ') {
            Some((head, id)) if id.bytes().all(|b| b.is_ascii_digit()) => head,
            _ => comm,
        }
        .to_owned();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        *out.entry(name).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    out
}

/// Per-thread CPU over a window: `after` less `before`, by name, rounded to 10 ms.
pub(crate) fn thread_usage_between(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (name, a) in after {
        let d = a - before.get(name).copied().unwrap_or(0.0);
        m.insert(name.clone(), serde_json::json!((d * 100.0).round() / 100.0));
    }
    serde_json::Value::Object(m)
}

/// What the server did while the load generator only watched.
pub(crate) struct Window {
    /// Server CPU seconds (user + system).
    pub cpu: f64,
    /// RTP packets the server handed to subscribers.
    pub forwarded: u64,
    /// Server RSS at the end, KiB.
    pub rss: u64,
    /// Wall seconds.
    pub wall: f64,
}

/// Sleeps for `measure`, reading the server's CPU and forwarding counters on either side.
pub(crate) fn measure_window(pid: u32, http_port: u16, measure: Duration) -> Window {
    let (cpu0, _) = proc_usage(pid);
    let out0 = rtp_out(http_port);
    let t0 = Instant::now();
    std::thread::sleep(measure);
    let (cpu1, rss) = proc_usage(pid);
    let out1 = rtp_out(http_port);
    Window {
        cpu: cpu1 - cpu0,
        forwarded: out1.saturating_sub(out0),
        rss,
        wall: t0.elapsed().as_secs_f64(),
    }
}

/// The `p` quantile (0–1) of sorted values, nearest rank.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
}

pub(crate) fn rtp_out(http_port: u16) -> u64 {
    rooms_counter(http_port, "rtp_out")
}

/// A counter from onair's /api/rooms (`rtp_in`, `rtp_out`).
pub(crate) fn rooms_counter(http_port: u16, name: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", http_port)) else {
        return 0;
    };
    let _ = s.write_all(b"GET /api/rooms HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    let json = body.split("\r\n\r\n").nth(1).unwrap_or("{}");
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v[name].as_u64())
        .unwrap_or(0)
}

/// A room participant on its own thread, publishing VP8 + Opus (no simulcast) or only watching.
fn participant(
    server: &TestServer,
    room: &str,
    name: String,
    publish: bool,
    stay: Duration,
) -> std::thread::JoinHandle<Result<testkit::Client, String>> {
    spawn(LiveOptions {
        url: server.ws_url(),
        room: room.into(),
        name,
        publish: publish.then_some(Publish {
            video: true,
            audio: true,
            simulcast: false,
        }),
        chat: None,
        stay,
    })
}

fn fanout(n: usize, bin: &str, measure: Duration) {
    let server = TestServer::start(bin, LOAD_ENV);
    let pid = server.pid();
    let (_, rss_idle) = proc_usage(pid);
    let setup = Duration::from_secs(2) + Duration::from_millis(40 * n as u64);
    let stay = setup + measure + Duration::from_secs(2);
    let publisher = participant(
        &server,
        "bench",
        "publisher".into(),
        true,
        stay + Duration::from_secs(1),
    );
    std::thread::sleep(Duration::from_millis(500));
    let joined_at = Instant::now();
    let subs: Vec<_> = (0..n)
        .map(|i| {
            let h = participant(&server, "bench", format!("sub{i}"), false, stay);
            std::thread::sleep(Duration::from_millis(20));
            (Instant::now(), h)
        })
        .collect();
    std::thread::sleep(setup.saturating_sub(joined_at.elapsed()));
    let Window {
        cpu,
        forwarded,
        rss,
        wall,
    } = measure_window(pid, server.http_port, measure);

    let mut first_frame_ms = Vec::new();
    let mut frames = Vec::new();
    for (started, h) in subs {
        let Ok(Ok(c)) = h.join() else { continue };
        if let Some(f) = c.frames.iter().find(|f| f.video) {
            first_frame_ms.push(f.at.duration_since(started).as_secs_f64() * 1000.0);
        }
        frames.push(c.frames.iter().filter(|f| f.video).count());
    }
    let _ = publisher.join();
    first_frame_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&first_frame_ms, p).unwrap_or(f64::NAN);
    let report = serde_json::json!({
        "scenario": "fanout",
        "subscribers": n,
        "subscribers_with_video": first_frame_ms.len(),
        "measure_seconds": wall,
        "server_cpu_seconds": cpu,
        "server_cpu_percent_of_one_core": 100.0 * cpu / wall,
        "rtp_forwarded": forwarded,
        "rtp_forwarded_per_cpu_second": if cpu > 0.0 { forwarded as f64 / cpu } else { f64::NAN },
        "rss_idle_kib": rss_idle,
        "rss_kib": rss,
        "rss_per_subscriber_kib": (rss.saturating_sub(rss_idle)) as f64 / n as f64,
        "first_video_frame_ms": {"p50": pct(0.5), "p90": pct(0.9), "max": pct(1.0)},
        "video_frames_per_subscriber_min": frames.iter().min(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    let _ = server.stop();
}

/// Scenario `meeting`: M room participants, each publishing VP8 + Opus and seeing all the
/// others (M × (M − 1) forwarded tracks of each kind), over room signalling. Reported: whether
/// everyone received video from everyone, the server's CPU, forwarded packets per CPU-second
/// and RSS per participant.
fn meeting(m: usize, bin: &str, measure: Duration) {
    let server = TestServer::start(bin, LOAD_ENV);
    let pid = server.pid();
    let (_, rss_idle) = proc_usage(pid);
    let setup = Duration::from_secs(3) + Duration::from_millis(100 * m as u64);
    let stay = setup + measure + Duration::from_secs(2);
    let peers: Vec<_> = (0..m)
        .map(|i| {
            let h = participant(&server, "meeting", format!("p{i}"), true, stay);
            std::thread::sleep(Duration::from_millis(100));
            h
        })
        .collect();
    std::thread::sleep(setup.saturating_sub(Duration::from_millis(100 * m as u64)));
    let Window {
        cpu,
        forwarded,
        rss,
        wall,
    } = measure_window(pid, server.http_port, measure);
    // Distinct video tracks each participant got frames on: M − 1 when it sees everyone.
    let mut seen: Vec<usize> = Vec::new();
    for h in peers {
        let Ok(Ok(c)) = h.join() else {
            seen.push(0);
            continue;
        };
        let mut tracks: Vec<_> = c
            .frames
            .iter()
            .filter(|f| f.video)
            .map(|f| f.track)
            .collect();
        tracks.sort();
        tracks.dedup();
        seen.push(tracks.len());
    }
    let report = serde_json::json!({
        "scenario": "meeting",
        "participants": m,
        "participants_seeing_everyone": seen.iter().filter(|&&n| n + 1 >= m).count(),
        "video_tracks_seen_min": seen.iter().min(),
        "measure_seconds": wall,
        "server_cpu_percent_of_one_core": 100.0 * cpu / wall,
        "rtp_forwarded": forwarded,
        "rtp_forwarded_per_cpu_second": if cpu > 0.0 { forwarded as f64 / cpu } else { f64::NAN },
        "rss_per_participant_kib": rss.saturating_sub(rss_idle) as f64 / m.max(1) as f64,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    let _ = server.stop();
}
