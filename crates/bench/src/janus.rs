//! Janus 1.1.2 (Debian's `janus`) as the peer in side-by-side runs: started here with a config
//! written for the run (HTTP transport and the streaming plugin only), fed plain RTP by
//! [`rtp_feeder`], and watched by the same str0m receivers that watch onair, over Janus's HTTP
//! API (create → attach → `watch` → Janus's offer → our answer with `start`).
//!
//! Janus gathers ICE candidates with libnice, which skips loopback interfaces, so inside the
//! loopback-only namespace it gets a veth pair of its own: 198.51.100.1 (a documentation
//! address) on one end for Janus (`ice_enforce_list`), 198.51.100.2 on the other for the
//! receivers. Both ends are in the namespace; nothing leaves it. (TESTING.md's 127.0.1.1 on a
//! veth lets Janus gather, but libnice then never reaches a 127.0.0.1 peer: its sends queue on
//! the veth. Janus's packets cross a veth where onair's cross `lo`; both are in-kernel copies.)

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sfu::str0m::change::SdpOffer;
use testkit::live::free_port;
use testkit::whep::{Publisher, ReceiverReport, epoch, receive, receiver_rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu/janus";
/// The one mountpoint this config declares.
const MOUNTPOINT: u64 = 1;
/// The one videoroom it declares.
const ROOM: u64 = 1234;
/// Where the load generator's peers bind for Janus (see the module comment).
const PEER_ADDR: &str = "198.51.100.2:0";

/// A running Janus; killed when dropped.
pub struct Janus {
    /// `timeout`, Janus's parent.
    child: Child,
    /// Janus itself.
    pid: u32,
    dir: PathBuf,
    /// Its HTTP API.
    pub http: SocketAddr,
    /// Where the mountpoint takes plain RTP video (VP8, pt 96) and audio (Opus, pt 111).
    pub video_in: SocketAddr,
    /// See `video_in`.
    pub audio_in: SocketAddr,
}

impl Janus {
    /// Writes a config and starts `janus`, waiting until its HTTP API answers.
    pub fn start() -> Result<Janus, String> {
        ensure_veth()?;
        let dir = std::env::temp_dir().join(format!("onair-bench-janus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (http_port, video_port, audio_port) = (free_port(), free_port(), free_port());
        let d = dir.display();
        // Everything but the HTTP transport and the streaming plugin is disabled, so Janus spends
        // nothing on them. Session timeouts are off: runs are bounded by the generator.
        let general = format!(
            "general: {{\n configs_folder = \"{d}\"\n plugins_folder = \"{LIBDIR}/plugins\"\n \
             transports_folder = \"{LIBDIR}/transports\"\n events_folder = \"{LIBDIR}/events\"\n \
             loggers_folder = \"{LIBDIR}/loggers\"\n debug_level = 3\n session_timeout = 0\n}}\n\
             media: {{ rtp_port_range = \"20000-40000\" }}\n\
             nat: {{ ice_enforce_list = \"{VETH}\" }}\n\
             plugins: {{ disable = \"{}\" }}\n\
             transports: {{ disable = \"{}\" }}\n\
             events: {{ broadcast = false }}\n\
             loggers: {{ disable = \"libjanus_jsonlog.so\" }}\n",
            others(
                &format!("{LIBDIR}/plugins"),
                &["libjanus_streaming.so", "libjanus_videoroom.so"]
            ),
            others(&format!("{LIBDIR}/transports"), &["libjanus_http.so"]),
        );
        let http = format!(
            "general: {{ json = \"plain\", base_path = \"/janus\", http = true, \
             port = {http_port}, ip = \"127.0.0.1\" }}\nadmin: {{ admin_http = false }}\n"
        );
        let streaming = format!(
            "general: {{ }}\nbench: {{ type = \"rtp\", id = {MOUNTPOINT}, description = \"bench\", \
             audio = true, video = true, audioport = {audio_port}, audiopt = 111, \
             audiocodec = \"opus\", videoport = {video_port}, videopt = 96, \
             videocodec = \"vp8\" }}\n"
        );
        // The meeting scenario's room: VP8 + Opus, no bitrate cap, no periodic keyframe requests.
        let videoroom = format!(
            "general: {{ }}\nroom-{ROOM}: {{ description = \"bench\", publishers = 64, \
             bitrate = 0, fir_freq = 0, audiocodec = \"opus\", videocodec = \"vp8\" }}\n"
        );
        for (name, text) in [
            ("janus.plugin.videoroom.jcfg", videoroom),
            ("janus.jcfg", general),
            ("janus.transport.http.jcfg", http),
            ("janus.plugin.streaming.jcfg", streaming),
        ] {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))?;
        }
        let log = std::fs::File::create(dir.join("janus.log")).map_err(|e| e.to_string())?;
        // Under `timeout`, so that a Janus whose load generator was killed does not run on.
        let child = Command::new("timeout")
            .args(["-s", "KILL", "900", "janus"])
            .arg("-F")
            .arg(&dir)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-o")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("janus: {e} (apt-get install -y janus)"))?;
        let pid = janus_pid(child.id())?;
        let janus = Janus {
            child,
            pid,
            dir,
            http: ([127, 0, 0, 1], http_port).into(),
            video_in: ([127, 0, 0, 1], video_port).into(),
            audio_in: ([127, 0, 0, 1], audio_port).into(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(janus.http).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "janus did not answer on {}; see {}/janus.log",
                    janus.http,
                    janus.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(janus)
    }

    /// The process id, for its CPU time and memory.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        // ONAIR_BENCH_KEEP=1 keeps the config and log for a look afterwards.
        if std::env::var_os("ONAIR_BENCH_KEEP").is_some() {
            self.dir = PathBuf::new();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Still there after 5 s: no more asking.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The pid of `timeout`'s child, once it has one.
fn janus_pid(parent: u32) -> Result<u32, String> {
    let path = format!("/proc/{parent}/task/{parent}/children");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let children = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("janus did not start (apt-get install -y janus)".into())
}

const VETH: &str = "onairj0";

/// The veth pair Janus's ICE may use (see the module comment). Exists already on a second run.
fn ensure_veth() -> Result<(), String> {
    let have = Command::new("ip")
        .args(["link", "show", VETH])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if have {
        return Ok(());
    }
    // Janus sends through its interface (it is bound there), so its packets come back in on the
    // veth's other end with a source address that is local: accept them.
    for conf in ["all", "default"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{conf}/accept_local"), "1");
    }
    for args in [
        vec![
            "link", "add", VETH, "type", "veth", "peer", "name", "onairj1",
        ],
        vec!["addr", "add", "198.51.100.1/24", "dev", VETH],
        vec!["addr", "add", "198.51.100.2/24", "dev", "onairj1"],
        vec!["link", "set", VETH, "up"],
        vec!["link", "set", "onairj1", "up"],
    ] {
        let ok = Command::new("ip")
            .args(&args)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "ip {}: failed (run inside ../shared/tools/netns-run, as root)",
                args.join(" ")
            ));
        }
    }
    Ok(())
}

/// The `.so` files in `dir` other than `keep`, comma-separated, for Janus's `disable` lists.
fn others(dir: &str, keep: &[&str]) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".so") && !keep.contains(&n.as_str()))
        .collect();
    names.sort();
    names.join(",")
}

/// One HTTP/1.0 exchange with Janus's API; returns the JSON body.
async fn call(http: SocketAddr, method: &str, path: &str, body: &Value) -> Result<Value, String> {
    let mut s = tokio::net::TcpStream::connect(http)
        .await
        .map_err(|e| format!("connect {http}: {e}"))?;
    let body = if method == "GET" {
        String::new()
    } else {
        body.to_string()
    };
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {http}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(json).map_err(|e| format!("{method} {path}: {e}: {json:.200}"))
}

fn id(v: &Value) -> Result<u64, String> {
    v["data"]["id"]
        .as_u64()
        .ok_or_else(|| format!("janus: no id in {v}"))
}

/// A receiver of the mountpoint: Janus offers, str0m answers, then it is the same counting
/// receiver as for onair.
pub async fn receiver(http: SocketAddr, until: Instant) -> Result<ReceiverReport, String> {
    let start = Instant::now();
    let sh = session_handle(http, "janus.plugin.streaming").await?;
    let watch = json!({"request": "watch", "id": MOUNTPOINT});
    let reply = request(http, &sh, watch, None).await?;
    let offer = reply["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| format!("janus: no offer in {reply}"))?;
    let sock = tokio::net::UdpSocket::bind(PEER_ADDR)
        .await
        .map_err(|e| e.to_string())?;
    let mut rtc = receiver_rtc(&sock, start)?;
    answer_and_start(http, &sh, &mut rtc, offer).await?;
    Ok(receive(rtc, &sock, start, until).await)
}

/// Answers Janus's offer with the receiving peer and sends `start` with the answer.
async fn answer_and_start(
    http: SocketAddr,
    sh: &(String, String),
    rtc: &mut sfu::str0m::Rtc,
    offer: &str,
) -> Result<(), String> {
    let offer = SdpOffer::from_sdp_string(offer).map_err(|e| format!("janus offer: {e}"))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| format!("janus offer: {e}"))?;
    let jsep = json!({"type": "answer", "sdp": answer.to_sdp_string()});
    request(http, sh, json!({"request": "start"}), Some(jsep)).await?;
    Ok(())
}

/// A session with one handle on `plugin`: the paths of both.
async fn session_handle(http: SocketAddr, plugin: &str) -> Result<(String, String), String> {
    let create = json!({"janus": "create", "transaction": "c"});
    let session = id(&call(http, "POST", "/janus", &create).await?)?;
    let base = format!("/janus/{session}");
    let attach = json!({"janus": "attach", "plugin": plugin, "transaction": "a"});
    let handle = id(&call(http, "POST", &base, &attach).await?)?;
    let path = format!("{base}/{handle}");
    Ok((base, path))
}

/// Sends a plugin request (with an SDP if given) and returns the plugin's reply: at once when
/// the plugin answers synchronously, else the event carrying our transaction from the
/// session's long poll (each session here has one handle, so nothing else is waiting there).
async fn request(
    http: SocketAddr,
    (base, path): &(String, String),
    body: Value,
    jsep: Option<Value>,
) -> Result<Value, String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tx = format!(
        "r{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut msg = json!({"janus": "message", "transaction": tx, "body": body});
    if let Some(j) = jsep {
        msg["jsep"] = j;
    }
    let ack = call(http, "POST", path, &msg).await?;
    match ack["janus"].as_str() {
        Some("success") => return Ok(ack),
        Some("ack") => {}
        _ => return Err(format!("janus: {ack}")),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let events = call(http, "GET", &format!("{base}?maxev=10"), &Value::Null).await?;
        let events = match events {
            Value::Array(a) => a,
            e => vec![e],
        };
        if let Some(e) = events.into_iter().find(|e| e["transaction"] == tx.as_str()) {
            if let Some(err) = e["plugindata"]["data"]["error"].as_str() {
                return Err(format!("janus: {err}"));
            }
            return Ok(e);
        }
    }
    Err(format!("janus: no reply to {tx} within 10 s"))
}

/// A videoroom publisher named `name`: joins the room, publishes with the same peer and media
/// as the WHIP publisher, and sends until `until`.
pub async fn room_publisher(
    http: SocketAddr,
    name: String,
    until: Instant,
    video_bytes: usize,
) -> Result<(), String> {
    let sh = session_handle(http, "janus.plugin.videoroom").await?;
    let join = json!({"request": "join", "ptype": "publisher", "room": ROOM, "display": name});
    request(http, &sh, join, None).await?;
    let sock = tokio::net::UdpSocket::bind(PEER_ADDR)
        .await
        .map_err(|e| e.to_string())?;
    let mut p = Publisher::offer(&sock)?;
    let offer = json!({"type": "offer", "sdp": p.offer});
    let publish = json!({"request": "publish", "audio": true, "video": true});
    let reply = request(http, &sh, publish, Some(offer)).await?;
    let answer = reply["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| format!("janus: no answer in {reply}"))?;
    p.accept(answer)?;
    p.send(&sock, until, video_bytes).await
}

/// The room's publishers: (feed id, display name).
pub async fn room_publishers(http: SocketAddr) -> Result<Vec<(u64, String)>, String> {
    let sh = session_handle(http, "janus.plugin.videoroom").await?;
    let list = json!({"request": "listparticipants", "room": ROOM});
    let reply = request(http, &sh, list, None).await?;
    let participants = reply["plugindata"]["data"]["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(participants
        .iter()
        .filter(|p| p["publisher"] == true)
        .filter_map(|p| Some((p["id"].as_u64()?, p["display"].as_str()?.to_owned())))
        .collect())
}

/// A videoroom subscriber of one feed: Janus offers, str0m answers, then the counting receiver.
pub async fn room_subscriber(
    http: SocketAddr,
    feed: u64,
    until: Instant,
) -> Result<ReceiverReport, String> {
    let start = Instant::now();
    let sh = session_handle(http, "janus.plugin.videoroom").await?;
    let join = json!({"request": "join", "ptype": "subscriber", "room": ROOM, "streams": [{"feed": feed}]});
    let reply = request(http, &sh, join, None).await?;
    let offer = reply["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| format!("janus: no offer in {reply}"))?;
    let sock = tokio::net::UdpSocket::bind(PEER_ADDR)
        .await
        .map_err(|e| e.to_string())?;
    let mut rtc = receiver_rtc(&sock, start)?;
    answer_and_start(http, &sh, &mut rtc, offer).await?;
    Ok(receive(rtc, &sock, start, until).await)
}

/// Sends what the WHIP publisher sends onair (VP8 frames of `video_bytes` at 30 fps, a keyframe
/// every 2 s, and 50 Opus packets/s stamped with their send time) as plain RTP to Janus's
/// mountpoint, until `until`. Plain RTP is Janus's cheapest ingest; one stream of it is a
/// rounding error next to the fan-out being measured.
pub fn rtp_feeder(video: SocketAddr, audio: SocketAddr, until: Instant, video_bytes: usize) {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return;
    };
    let (vssrc, assrc) = (0x0a11_ce00u32, 0x0a11_ce01u32);
    let (mut vseq, mut aseq) = (0u16, 0u16);
    let (mut next_video, mut next_audio) = (Instant::now(), Instant::now());
    let (mut frame_no, mut audio_no) = (0u64, 0u64);
    // Payload per packet, as str0m's VP8 packetizer cuts 1200-byte packets.
    const CHUNK: usize = 1150;
    while Instant::now() < until {
        let now = Instant::now();
        if now >= next_video {
            let ts = (frame_no * 3000) as u32;
            let key = frame_no % 60 == 0;
            let mut left = video_bytes.max(16);
            let mut first = true;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                let mut p = rtp_header(96, left == 0, vseq, ts, vssrc);
                // VP8 payload descriptor: S bit on the first packet of a frame.
                p.push(if first { 0x10 } else { 0x00 });
                if first {
                    p.push(if key { 0x10 } else { 0x11 });
                    p.resize(p.len() + n - 1, 0xab);
                } else {
                    p.resize(p.len() + n, 0xab);
                }
                let _ = sock.send_to(&p, video);
                vseq = vseq.wrapping_add(1);
                first = false;
            }
            frame_no += 1;
            next_video += Duration::from_micros(33_333);
        }
        if now >= next_audio {
            let mut p = rtp_header(111, true, aseq, (audio_no * 960) as u32, assrc);
            p.push(0xfc);
            p.extend_from_slice(&(now.duration_since(epoch()).as_micros() as u64).to_be_bytes());
            p.resize(12 + 80, 0);
            let _ = sock.send_to(&p, audio);
            aseq = aseq.wrapping_add(1);
            audio_no += 1;
            next_audio += Duration::from_millis(20);
        }
        let wake = next_video.min(next_audio).min(until);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
}

fn rtp_header(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(1200);
    h.push(0x80);
    h.push(pt | if marker { 0x80 } else { 0 });
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ts.to_be_bytes());
    h.extend_from_slice(&ssrc.to_be_bytes());
    h
}
