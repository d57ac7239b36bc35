//! WHIP publishers and WHEP viewers in virtual time, without sockets: a str0m peer publishes
//! over "HTTP" (the SFU's session calls), another plays; packets go straight between them and
//! the SFU on a virtual clock with a fixed delay.

// Helpers outside #[test] functions unwrap too: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::signal::TrackKind;
use sfu::str0m::change::SdpAnswer;
use sfu::str0m::format::Codec;
use sfu::str0m::media::{Direction, MediaKind, MediaTime, Mid};
use sfu::str0m::net::{Protocol, Receive};
use sfu::str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};
use sfu::{HttpSessionError, Output, Sfu, SfuConfig, SfuEvent};

const SFU: &str = "10.0.0.100:5000";
const DELAY: Duration = Duration::from_millis(5);

struct Peer {
    addr: SocketAddr,
    rtc: Rtc,
    mid: Option<Mid>,
    /// Frame numbers received (viewers), in order.
    got: Vec<u32>,
    sent: u32,
}

impl Peer {
    fn new(addr: &str, now: Instant) -> Peer {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_vp8(true)
            .enable_h264(true)
            .enable_opus(true, false)
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Peer {
            addr,
            rtc,
            mid: None,
            got: Vec::new(),
            sent: 0,
        }
    }

    /// An offer with one video m-line in `dir`, and the pending state to accept the answer.
    fn offer(&mut self, dir: Direction) -> (String, sfu::str0m::change::SdpPendingOffer) {
        let mut api = self.rtc.sdp_api();
        self.mid = Some(api.add_media(MediaKind::Video, dir, None, None, None));
        let (offer, pending) = api.apply().unwrap();
        (offer.to_sdp_string(), pending)
    }
}

/// Packets in flight: (arrival, from, to, bytes).
struct World {
    now: Instant,
    sfu: Sfu,
    peers: Vec<Peer>,
    wire: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    events: Vec<SfuEvent>,
    /// A hub stream fed to the SFU's hub source with each frame tick (H.264 frames of the
    /// same numbering as the publishers'), and the frames fed so far.
    hub: Option<String>,
    hub_sent: u32,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        let cand = Candidate::host(SFU.parse().unwrap(), "udp").unwrap();
        World {
            now,
            sfu: Sfu::new(SfuConfig::default(), vec![cand], 7, now),
            peers: Vec::new(),
            wire: Vec::new(),
            events: Vec::new(),
            hub: None,
            hub_sent: 0,
        }
    }

    fn answer(&mut self, i: usize, pending: sfu::str0m::change::SdpPendingOffer, sdp: &str) {
        let answer = SdpAnswer::from_sdp_string(sdp).unwrap();
        self.peers[i]
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .unwrap();
    }

    /// Runs for `d`; publishers (`senders`) send a 30 fps VP8 frame each 33 ms, a keyframe
    /// every 30 frames.
    fn run(&mut self, d: Duration, senders: &[usize]) {
        let end = self.now + d;
        let mut next_frame = self.now;
        while self.now < end {
            let now = self.now;
            if now >= next_frame {
                for &s in senders {
                    let p = &mut self.peers[s];
                    let (Some(mid), true) = (p.mid, p.rtc.is_connected()) else {
                        continue;
                    };
                    let n = p.sent;
                    p.sent += 1;
                    let mut frame = vec![if n.is_multiple_of(30) { 0x10 } else { 0x11 }];
                    frame.extend_from_slice(&n.to_be_bytes());
                    frame.resize(1200, 0xab);
                    let pt = p
                        .rtc
                        .codec_config()
                        .find(|c| c.spec().codec == Codec::Vp8)
                        .unwrap()
                        .pt();
                    if let Some(w) = p.rtc.writer(mid) {
                        w.write(pt, now, MediaTime::from_90khz(n as u64 * 3000), frame)
                            .unwrap();
                    }
                }
                if let Some(stream) = &self.hub {
                    let n = self.hub_sent;
                    self.hub_sent += 1;
                    let au = hub_access_unit(n);
                    let pts = u64::from(n) * 33_333;
                    let key = n.is_multiple_of(30);
                    self.sfu
                        .hub_frame(now, stream, sfu::FrameTrack::H264, key, pts, &au);
                }
                next_frame = now + Duration::from_millis(33);
            }
            // Deliver what has arrived.
            let (due, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|p| p.0 <= now);
            self.wire = rest;
            for (_, from, to, data) in due {
                if to == SFU.parse().unwrap() {
                    self.sfu.handle_receive(now, Protocol::Udp, from, to, &data);
                } else if let Some(p) = self.peers.iter_mut().find(|p| p.addr == to) {
                    let r = Receive {
                        proto: Protocol::Udp,
                        source: from,
                        destination: to,
                        contents: data.as_slice().try_into().unwrap(),
                    };
                    let _ = p.rtc.handle_input(Input::Receive(now, r));
                    // Polled after each datagram, as a client's event loop does: str0m takes
                    // up the SRTP keys of a finished handshake when polled, and a packet
                    // right behind the handshake's last flight needs them.
                    poll_peer(p, now, &mut self.wire);
                }
            }
            self.sfu.handle_timeout(now);
            for p in &mut self.peers {
                let _ = p.rtc.handle_input(Input::Timeout(now));
            }
            self.drain();
            self.now += Duration::from_millis(1);
        }
    }

    fn drain(&mut self) {
        let now = self.now;
        loop {
            match self.sfu.poll_output() {
                Output::Transmit(t) => {
                    self.wire
                        .push((now + DELAY, t.source, t.destination, t.contents.to_vec()))
                }
                Output::Event(e) => self.events.push(e),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        for p in &mut self.peers {
            poll_peer(p, now, &mut self.wire);
        }
    }

    fn publish(&mut self, addr: &str, stream: &str) -> (usize, String) {
        let mut p = Peer::new(addr, self.now);
        let (offer, pending) = p.offer(Direction::SendOnly);
        self.peers.push(p);
        let i = self.peers.len() - 1;
        let s = self.sfu.whip_publish(self.now, stream, &offer).unwrap();
        self.answer(i, pending, &s.answer);
        self.drain();
        (i, s.token)
    }

    fn view(&mut self, addr: &str, stream: &str) -> Result<(usize, String), HttpSessionError> {
        let mut p = Peer::new(addr, self.now);
        let (offer, pending) = p.offer(Direction::RecvOnly);
        let s = self.sfu.whep_play(self.now, stream, &offer, None)?;
        self.peers.push(p);
        let i = self.peers.len() - 1;
        self.answer(i, pending, &s.answer);
        self.drain();
        Ok((i, s.token))
    }
}

/// Takes what a test peer has to send and the frames it received.
fn poll_peer(
    p: &mut Peer,
    now: Instant,
    wire: &mut Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
) {
    loop {
        match p.rtc.poll_output() {
            Ok(RtcOutput::Transmit(t)) => {
                wire.push((now + DELAY, t.source, t.destination, t.contents.to_vec()))
            }
            Ok(RtcOutput::Event(Event::MediaData(m))) => {
                if let Some(n) = frame_number(&m.data) {
                    p.got.push(n);
                }
            }
            Ok(RtcOutput::Event(_)) => {}
            Ok(RtcOutput::Timeout(_)) | Err(_) => break,
        }
    }
}

/// An H.264 access unit as the hub keeps one (4-byte NAL unit lengths): an IDR slice every 30
/// frames, else a non-IDR one, its frame number after the NAL header, 2,500 bytes (so cut
/// into FU-A fragments).
fn hub_access_unit(n: u32) -> Vec<u8> {
    let mut nal = vec![if n.is_multiple_of(30) { 0x65 } else { 0x41 }];
    nal.extend_from_slice(&n.to_be_bytes());
    nal.resize(2_500, 0xab);
    let mut au = (nal.len() as u32).to_be_bytes().to_vec();
    au.extend_from_slice(&nal);
    au
}

/// The number a test frame carries: after a VP8 frame's first byte, or after the header of
/// the slice NAL unit of an Annex B access unit.
fn frame_number(data: &[u8]) -> Option<u32> {
    let b = if data.starts_with(&[0, 0, 0, 1]) || data.starts_with(&[0, 0, 1]) {
        let at = data
            .windows(4)
            .position(|w| w[..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 1 | 5))?;
        data.get(at + 4..at + 8)?
    } else {
        data.get(1..5)?
    };
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[test]
fn a_whep_viewer_plays_a_whip_publish_from_a_keyframe_in_order() {
    let mut w = World::new();
    let (p, _) = w.publish("10.0.0.1:4000", "live/a");
    assert!(
        matches!(
            w.view("10.0.0.2:4000", "live/a"),
            Err(HttpSessionError::NoMediaYet(_))
        ),
        "before the first packet the viewer is told to come back"
    );
    w.run(Duration::from_secs(1), &[p]);
    let tracks = w.events.iter().find_map(|e| match e {
        SfuEvent::TracksChanged { tracks, .. } => Some(tracks.clone()),
        _ => None,
    });
    let tracks = tracks.expect("the publisher's tracks are told to the driver");
    assert_eq!(tracks.len(), 1);
    assert_eq!(tracks[0].kind, TrackKind::Video);
    assert!(
        w.events.iter().any(|e| matches!(e, SfuEvent::Frame { .. })),
        "frames reach the hub side"
    );

    let (v, _) = w.view("10.0.0.2:4000", "live/a").unwrap();
    w.run(Duration::from_secs(3), &[p]);
    let got = &w.peers[v].got;
    assert!(got.len() > 60, "viewer got {} frames", got.len());
    assert_eq!(
        got[0] % 30,
        0,
        "the first frame shown is a keyframe: {got:?}"
    );
    assert!(
        got.windows(2).all(|x| x[1] == x[0] + 1),
        "in order, no gaps: {got:?}"
    );
}

/// A viewer of a stream with one layer runs no bandwidth estimate (nothing to choose), so it
/// is answered without the header extensions that exist for one: no transport-wide sequence
/// number in every packet, no history of sent packets kept for its feedback. It plays as
/// before, and its round trip and loss come from its receiver reports. The publisher keeps
/// transport-cc: the browser's own estimate of its uplink needs the server's feedback.
#[test]
fn a_viewer_without_an_estimate_goes_without_transport_cc() {
    const TWCC: &str = "transport-wide-cc";
    const ABS_SEND_TIME: &str = "abs-send-time";
    let mut w = World::new();
    let mut p = Peer::new("10.0.0.1:4000", w.now);
    let (offer, pending) = p.offer(Direction::SendOnly);
    assert!(offer.contains(TWCC), "the test peer offers transport-cc");
    w.peers.push(p);
    let published = w.sfu.whip_publish(w.now, "live/t", &offer).unwrap();
    assert!(published.answer.contains(TWCC), "{}", published.answer);
    w.answer(0, pending, &published.answer);
    w.drain();
    w.run(Duration::from_secs(1), &[0]);

    let mut v = Peer::new("10.0.0.2:4000", w.now);
    let (offer, pending) = v.offer(Direction::RecvOnly);
    assert!(offer.contains(TWCC) && offer.contains(ABS_SEND_TIME));
    w.peers.push(v);
    let viewing = w.sfu.whep_play(w.now, "live/t", &offer, None).unwrap();
    assert!(
        !viewing.answer.contains(TWCC) && !viewing.answer.contains(ABS_SEND_TIME),
        "{}",
        viewing.answer
    );
    w.answer(1, pending, &viewing.answer);
    w.drain();
    w.run(Duration::from_secs(6), &[0]);
    let got = &w.peers[1].got;
    assert!(got.len() > 120, "viewer got {} frames", got.len());
    assert!(
        got.windows(2).all(|x| x[1] == x[0] + 1),
        "in order: {got:?}"
    );

    let viewer = w
        .sfu
        .session_reports()
        .into_iter()
        .find(|r| r.role == "whep")
        .unwrap();
    let conn = &viewer.connections[0];
    let rtt = conn.rtt_ms.expect("a round trip from the receiver reports");
    // The virtual wire delays each way by 5 ms.
    assert!((5.0..100.0).contains(&rtt), "round trip {rtt} ms");
    assert_eq!(
        conn.loss_out_pct,
        Some(0.0),
        "loss from the receiver reports"
    );
}

/// A stream that lives in the hub (RTMP): packetized once by its hub source, forwarded to
/// each viewer. A viewer starts once connected, at the last keyframe (nobody could be asked
/// for one), and goes on in order; it negotiates no transport-cc (one layer, no estimate).
#[test]
fn hub_viewers_start_at_the_last_keyframe_and_play_in_order() {
    let mut w = World::new();
    let stream = "live/rtmp";
    w.sfu
        .hub_source_open(w.now, stream, &[sfu::FrameTrack::H264]);
    w.sfu
        .hub_parameter_sets(stream, vec![vec![0x67, 0x42, 0xe0, 0x1f], vec![0x68, 0xce]]);
    w.hub = Some(stream.to_owned());
    w.run(Duration::from_millis(400), &[]);

    let view = |w: &mut World, addr: &str| {
        let mut v = Peer::new(addr, w.now);
        let (offer, pending) = v.offer(Direction::RecvOnly);
        assert!(
            offer.contains("transport-wide-cc"),
            "the test peer offers it"
        );
        let s = w.sfu.whep_play_hub(w.now, stream, &offer).unwrap();
        assert!(s.answer.contains("H264"), "{}", s.answer);
        assert!(
            !s.answer.contains("transport-wide-cc") && !s.answer.contains("abs-send-time"),
            "{}",
            s.answer
        );
        w.peers.push(v);
        let i = w.peers.len() - 1;
        w.answer(i, pending, &s.answer);
        w.drain();
        i
    };
    let a = view(&mut w, "10.0.0.2:4000");
    w.run(Duration::from_millis(1_200), &[]);
    let b = view(&mut w, "10.0.0.3:4000");
    w.run(Duration::from_secs(2), &[]);

    let (got_a, got_b) = (&w.peers[a].got, &w.peers[b].got);
    assert_eq!(
        got_a.first(),
        Some(&0),
        "joined 400 ms in: starts at frame 0, the last keyframe, from the kept GOP: {got_a:?}"
    );
    assert_eq!(
        got_b.first(),
        Some(&30),
        "joined 1.6 s in: starts at frame 30: {got_b:?}"
    );
    for got in [got_a, got_b] {
        assert!(
            got.windows(2).all(|x| x[1] == x[0] + 1),
            "in order: {got:?}"
        );
        assert!(
            got.last().is_some_and(|n| *n + 3 >= w.hub_sent),
            "and up to the live frame ({} fed): {got:?}",
            w.hub_sent
        );
    }
    assert!(
        w.sfu.stats().rtp_out > 2 * 3 * (got_b.len() as u64),
        "forwarded packets are counted: {}",
        w.sfu.stats().rtp_out
    );

    // The stream ends: its viewers' sessions end with it.
    w.events.clear();
    w.sfu.hub_source_close(w.now, stream);
    w.drain();
    let ended = w
        .events
        .iter()
        .filter(|e| matches!(e, SfuEvent::SessionEnded { .. }))
        .count();
    assert_eq!(ended, 2, "{:?}", w.events);
    assert!(!w.sfu.has_hub_source(stream));
    assert!(matches!(
        w.sfu.whep_play_hub(w.now, stream, "v=0"),
        Err(HttpSessionError::NotFound(_))
    ));
}

#[test]
fn a_viewer_follows_its_stream_name_across_a_republish() {
    let mut w = World::new();
    let (p1, token1) = w.publish("10.0.0.1:4000", "live/b");
    w.run(Duration::from_millis(800), &[p1]);
    let (v, _) = w.view("10.0.0.2:4000", "live/b").unwrap();
    w.run(Duration::from_secs(2), &[p1]);
    let before = w.peers[v].got.len();
    assert!(
        before > 30,
        "viewer got {before} frames from the first publisher"
    );

    // The first publisher leaves; a second one publishes under the same name.
    w.sfu.end_http_session(w.now, &token1).unwrap();
    w.drain();
    assert!(
        w.events
            .iter()
            .any(|e| matches!(e, SfuEvent::SessionEnded { .. }))
    );
    assert!(!w.sfu.has_stream("live/b"));
    w.run(Duration::from_millis(500), &[]);
    let (p2, _) = w.publish("10.0.0.3:4000", "live/b");
    w.run(Duration::from_secs(3), &[p2]);
    let after = &w.peers[v].got[before..];
    assert!(
        after.len() > 30,
        "the viewer carries on with the new publisher: {} frames",
        after.len()
    );
    assert_eq!(
        after[0], 0,
        "starting at the new publisher's first keyframe: {after:?}"
    );
    assert!(after.windows(2).all(|x| x[1] == x[0] + 1));
}

#[test]
fn http_session_errors_are_precise() {
    let mut w = World::new();
    assert!(matches!(
        w.sfu.whep_play(w.now, "live/none", "v=0", None),
        Err(HttpSessionError::NotFound(_))
    ));
    assert!(matches!(
        w.sfu.whip_publish(w.now, "live/x", "garbage"),
        Err(HttpSessionError::BadSdp(_))
    ));
    assert_eq!(
        w.sfu.http_session_patch(
            w.now,
            "nope",
            "a=candidate:1 1 udp 1 10.0.0.1 4000 typ host"
        ),
        Err(HttpSessionError::UnknownSession)
    );
    let (_, token) = w.publish("10.0.0.1:4000", "live/x");
    assert!(matches!(
        w.sfu
            .http_session_patch(w.now, &token, "a=candidate:garbage"),
        Err(HttpSessionError::BadFragment(_))
    ));
    assert_eq!(
        w.sfu.http_session_patch(
            w.now,
            &token,
            "a=ice-ufrag:other\r\na=ice-pwd:xxxxxxxxxxxxxxxxxxxxxx\r\n"
        ),
        Err(HttpSessionError::IceRestartUnsupported)
    );
    // mDNS candidates are skipped, real ones taken.
    assert_eq!(
        w.sfu.http_session_patch(
            w.now,
            &token,
            "a=candidate:1 1 udp 2122260223 abcd.local 4000 typ host\r\n\
             a=candidate:2 1 udp 2122260223 10.0.0.1 4000 typ host\r\na=end-of-candidates\r\n"
        ),
        Ok(())
    );
    assert_eq!(w.sfu.end_http_session(w.now, &token), Ok(()));
    assert_eq!(
        w.sfu.end_http_session(w.now, &token),
        Err(HttpSessionError::UnknownSession)
    );
}

#[test]
fn trickled_candidates_and_offered_m_lines_are_bounded() {
    let mut w = World::new();
    let (_, token) = w.publish("10.0.0.1:4000", "live/x");
    let cand = |i: u32| {
        format!(
            "a=candidate:{i} 1 udp 2122260223 10.{}.{}.1 4000 typ host\r\n",
            i / 200,
            i % 200
        )
    };
    let first: String = (0..64).map(cand).collect();
    assert_eq!(w.sfu.http_session_patch(w.now, &token, &first), Ok(()));
    let e = w
        .sfu
        .http_session_patch(w.now, &token, &cand(64))
        .unwrap_err();
    assert!(
        matches!(&e, HttpSessionError::BadFragment(m) if m.contains("64")),
        "{e}"
    );
    // An offer with hundreds of m-lines is refused before it is parsed.
    let mut offer = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    for _ in 0..602 {
        offer.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n");
    }
    let e = w.sfu.whip_publish(w.now, "live/many", &offer).unwrap_err();
    assert!(
        matches!(&e, HttpSessionError::BadSdp(m) if m.contains("602 m-lines")),
        "{e}"
    );
}

#[test]
fn a_session_whose_client_never_connects_ends_by_itself() {
    let mut w = World::new();
    let mut p = Peer::new("10.0.0.1:4000", w.now);
    let (offer, _) = p.offer(Direction::SendOnly);
    // The answer never reaches the client: it sends nothing.
    let s = w.sfu.whip_publish(w.now, "live/ghost", &offer).unwrap();
    w.run(Duration::from_secs(10), &[]);
    assert!(w.sfu.has_stream("live/ghost"), "still waiting after 10 s");
    w.run(Duration::from_secs(6), &[]);
    assert!(!w.sfu.has_stream("live/ghost"));
    assert!(w.events.iter().any(
        |e| matches!(e, SfuEvent::SessionEnded { participant } if *participant == s.participant)
    ));
}

/// A WHIP/WHEP session's token names its HTTP resource; it is not a room member's resume
/// token, so a signalling socket that offers one is refused (once, it found the session and
/// tied the socket to it).
#[test]
fn a_whip_token_does_not_resume_a_room_member() {
    let mut w = World::new();
    let (_, token) = w.publish("10.0.0.1:4000", "live/x");
    let conn = sfu::ConnId(1);
    w.sfu.connect(conn);
    let join: sfu::signal::ClientMessage = serde_json::from_value(serde_json::json!({
        "type": "join", "room": "r", "name": "n", "resume": token
    }))
    .unwrap();
    w.sfu.handle_signal(w.now, conn, join);
    let mut replies = Vec::new();
    loop {
        match w.sfu.poll_output() {
            Output::Signal(c, m) if c == conn => replies.push(m),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert!(
        matches!(
            replies.as_slice(),
            [sfu::signal::ServerMessage::Error {
                code: sfu::signal::ErrorCode::ResumeFailed,
                ..
            }]
        ),
        "{replies:?}"
    );
    // The session is untouched: it still answers to its token.
    assert_eq!(w.sfu.end_http_session(w.now, &token), Ok(()));
}
