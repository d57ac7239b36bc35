//! WHIP publishers and WHEP receivers in real time against a running onair: the load
//! generator's peers. A publisher sends synthetic VP8 (30 fps) and Opus (50 packets/s, each
//! stamped with its send time); a receiver does ICE and DTLS-SRTP and then only counts, checks
//! the order of, and times packets, without decoding, so one load-generator thread can hold
//! hundreds of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sfu::str0m::change::{SdpAnswer, SdpPendingOffer};
use sfu::str0m::format::Codec;
use sfu::str0m::media::{Direction, MediaKind, MediaTime, Mid};
use sfu::str0m::net::{Protocol, Receive};
use sfu::str0m::rtp::Ssrc;
use sfu::str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// One clock for every peer in this process: send stamps and arrival times compare directly.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// POSTs an SDP offer; returns the answer and the session's `Location`.
pub async fn post_offer(
    http: SocketAddr,
    path: &str,
    sdp: &str,
) -> Result<(String, String), String> {
    let mut s = TcpStream::connect(http)
        .await
        .map_err(|e| format!("connect {http}: {e}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{sdp}",
        sdp.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "201" {
        return Err(format!("POST {path}: {status} {}", body.trim()));
    }
    let location = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((body.to_owned(), location))
}

/// What a receiver saw.
#[derive(Debug, Clone, Default)]
pub struct ReceiverReport {
    /// When the first media packet arrived, from the start of the session.
    pub first_packet: Option<Duration>,
    /// RTP packets received, by kind (audio, video).
    pub audio_packets: u64,
    /// Video RTP packets received.
    pub video_packets: u64,
    /// Packets missing in the sequence ranges seen (never arrived, even repaired).
    pub missing: u64,
    /// Send → arrival of each audio packet, microseconds (same process clock).
    pub latencies_us: Vec<u64>,
    /// Packets that arrived after a later one.
    pub reordered: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Why the peer stopped before the end, if it did.
    pub error: Option<String>,
}

/// Per-SSRC sequence bookkeeping.
#[derive(Default)]
struct SeqTrack {
    first: u64,
    highest: u64,
    seen: std::collections::HashSet<u64>,
}

/// A WHIP publisher: runs until `until`, sending `video_bytes` per video frame.
pub async fn whip_publisher(
    http: SocketAddr,
    stream: &str,
    until: Instant,
    video_bytes: usize,
) -> Result<(), String> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut p = Publisher::offer(&sock)?;
    let (answer, _) = post_offer(http, &format!("/whip/{stream}"), &p.offer).await?;
    p.accept(&answer)?;
    p.send(&sock, until, video_bytes).await
}

/// A sending peer for any server: VP8 and Opus, send-only, with a host candidate on the socket
/// it was made for. Make it, hand `offer` to the server, `accept` its answer, then `send`.
pub struct Publisher {
    rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    video: Mid,
    audio: Mid,
    /// The SDP offer for the server.
    pub offer: String,
}

impl Publisher {
    /// Builds the peer and its offer.
    pub fn offer(sock: &UdpSocket) -> Result<Publisher, String> {
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_vp8(true)
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().ok_or("no offer")?;
        Ok(Publisher {
            rtc,
            pending: Some(pending),
            video,
            audio,
            offer: offer.to_sdp_string(),
        })
    }

    /// Takes the server's answer.
    pub fn accept(&mut self, answer: &str) -> Result<(), String> {
        let pending = self.pending.take().ok_or("answer already taken")?;
        accept(&mut self.rtc, pending, answer)
    }

    /// Sends until `until`: `video_bytes` per video frame at 30 fps, a keyframe every 2 s, and
    /// 50 Opus packets/s stamped with their send time.
    pub async fn send(
        self,
        sock: &UdpSocket,
        until: Instant,
        video_bytes: usize,
    ) -> Result<(), String> {
        let Publisher {
            mut rtc,
            video,
            audio,
            ..
        } = self;
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        send_media(&mut rtc, sock, local, video, audio, until, video_bytes).await
    }
}

async fn send_media(
    rtc: &mut Rtc,
    sock: &UdpSocket,
    local: SocketAddr,
    video: Mid,
    audio: Mid,
    until: Instant,
    video_bytes: usize,
) -> Result<(), String> {
    let (mut next_video, mut next_audio) = (Instant::now(), Instant::now());
    let (mut frame_no, mut audio_no) = (0u64, 0u64);
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        if rtc.is_connected() {
            if now >= next_video {
                let pt = rtc
                    .codec_config()
                    .find(|c| c.spec().codec == Codec::Vp8)
                    .map(|c| c.pt());
                if let (Some(pt), Some(w)) = (pt, rtc.writer(video)) {
                    // A keyframe every 2 s; the VP8 frame tag's bit 0 says which.
                    let mut frame = vec![if frame_no % 60 == 0 { 0x10 } else { 0x11 }];
                    frame.resize(video_bytes.max(16), 0xab);
                    let _ = w.write(pt, now, MediaTime::from_90khz(frame_no * 3000), frame);
                }
                frame_no += 1;
                next_video += Duration::from_micros(33_333);
            }
            if now >= next_audio {
                let pt = rtc
                    .codec_config()
                    .find(|c| c.spec().codec == Codec::Opus)
                    .map(|c| c.pt());
                if let (Some(pt), Some(w)) = (pt, rtc.writer(audio)) {
                    let mut pkt = vec![0xfc];
                    pkt.extend_from_slice(
                        &(now.duration_since(epoch()).as_micros() as u64).to_be_bytes(),
                    );
                    pkt.resize(80, 0);
                    let t = MediaTime::new(
                        audio_no * 960,
                        sfu::str0m::media::Frequency::FORTY_EIGHT_KHZ,
                    );
                    let _ = w.write(pt, now, t, pkt);
                }
                audio_no += 1;
                next_audio += Duration::from_millis(20);
            }
        } else {
            (next_video, next_audio) = (now, now);
        }
        let deadline = drive(rtc, sock, |_| {}).await?;
        let wake = deadline.min(next_video).min(next_audio).min(until);
        recv_until(rtc, sock, local, &mut buf, wake).await;
    }
}

/// A WHEP receiver of `stream`: runs until `until` and reports what arrived.
pub async fn whep_receiver(
    http: SocketAddr,
    stream: &str,
    until: Instant,
) -> Result<ReceiverReport, String> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    // RTP mode: packets are counted, never depacketized.
    let mut rtc = receiver_rtc(&sock, start)?;
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().ok_or("no offer")?;
    let (answer, _) = post_offer(http, &format!("/whep/{stream}"), &offer.to_sdp_string()).await?;
    accept(&mut rtc, pending, &answer)?;
    Ok(receive(rtc, &sock, start, until).await)
}

/// A receiving peer for any server: RTP mode, VP8, H.264 (an RTMP stream's) and Opus,
/// receive-only, with a host candidate on `sock`. Whoever builds it does the offer/answer.
pub fn receiver_rtc(sock: &UdpSocket, start: Instant) -> Result<Rtc, String> {
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_vp8(true)
        .enable_h264(true)
        .enable_opus(true, false)
        .build(start);
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
    Ok(rtc)
}

/// Packets received by every receiver in this process so far: a load generator reads it on
/// either side of a measuring window, the same way for any server.
pub static RECEIVED_PACKETS: AtomicU64 = AtomicU64::new(0);

/// Runs a connected-or-connecting receiver until `until`: counts, order-checks and times
/// what arrives.
pub async fn receive(
    mut rtc: Rtc,
    sock: &UdpSocket,
    start: Instant,
    until: Instant,
) -> ReceiverReport {
    let Ok(local) = sock.local_addr() else {
        return ReceiverReport::default();
    };
    let mut report = ReceiverReport::default();
    let mut seqs: HashMap<Ssrc, SeqTrack> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let polled = drive(&mut rtc, sock, |e| {
            let Event::RtpPacket(p) = e else { return };
            RECEIVED_PACKETS.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            report.first_packet.get_or_insert(now.duration_since(start));
            report.bytes += p.payload.len() as u64;
            let opus = p.payload.first() == Some(&0xfc) && p.payload.len() == 80;
            if opus {
                report.audio_packets += 1;
                if let Some(b) = p.payload.get(1..9) {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    let sent = u64::from_be_bytes(a);
                    let at = now.duration_since(epoch()).as_micros() as u64;
                    report.latencies_us.push(at.saturating_sub(sent));
                }
            } else {
                report.video_packets += 1;
            }
            let s = seqs.entry(p.header.ssrc).or_default();
            let n = *p.seq_no;
            if s.seen.is_empty() {
                s.first = n;
            }
            if n < s.highest {
                report.reordered += 1;
            }
            s.highest = s.highest.max(n);
            s.seen.insert(n);
        })
        .await;
        // A peer that failed (its DTLS, say) is over: report what it got.
        let deadline = *polled.as_ref().unwrap_or(&until);
        if Instant::now() >= until || polled.is_err() {
            report.error = polled.err();
            report.missing = seqs
                .values()
                .map(|s| (s.highest - s.first + 1).saturating_sub(s.seen.len() as u64))
                .sum();
            return report;
        }
        recv_until(&mut rtc, sock, local, &mut buf, deadline.min(until)).await;
    }
}

fn accept(rtc: &mut Rtc, pending: SdpPendingOffer, answer: &str) -> Result<(), String> {
    let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| format!("answer: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("answer: {e}"))
}

/// Drains the peer: sends what it transmits, hands events to `on_event`; returns its deadline.
async fn drive(
    rtc: &mut Rtc,
    sock: &UdpSocket,
    mut on_event: impl FnMut(Event),
) -> Result<Instant, String> {
    loop {
        match rtc.poll_output().map_err(|e| e.to_string())? {
            Output::Timeout(t) => return Ok(t),
            Output::Transmit(t) => {
                let _ = sock.send_to(&t.contents, t.destination).await;
            }
            Output::Event(e) => on_event(e),
        }
    }
}

/// Waits for a datagram or `wake`, and feeds the peer either.
async fn recv_until(
    rtc: &mut Rtc,
    sock: &UdpSocket,
    local: SocketAddr,
    buf: &mut [u8],
    wake: Instant,
) {
    let wake = wake.max(Instant::now() + Duration::from_micros(200));
    tokio::select! {
        r = sock.recv_from(buf) => {
            if let Ok((n, from)) = r
                && let Ok(contents) = buf[..n].try_into()
            {
                let input = Input::Receive(
                    Instant::now(),
                    Receive { proto: Protocol::Udp, source: from, destination: local, contents },
                );
                let _ = rtc.handle_input(input);
            }
        }
        _ = tokio::time::sleep_until(wake.into()) => {
            let _ = rtc.handle_input(Input::Timeout(Instant::now()));
        }
    }
}
