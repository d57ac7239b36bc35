//! Two SFUs as two media shards of one server, in virtual time: a WHIP publisher on one, WHEP
//! viewers on both. The driver's part (the server's shard loops) is played here: exported
//! packets, keyframe requests and the ends of mirrors are carried between the two.

// Helpers outside #[test] functions unwrap too: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::mirror::MirrorPacket;
use sfu::signal::{ClientMessage, ErrorCode, ServerMessage};
use sfu::str0m::change::SdpAnswer;
use sfu::str0m::format::Codec;
use sfu::str0m::media::{Direction, MediaKind, MediaTime, Mid};
use sfu::str0m::net::{Protocol, Receive};
use sfu::str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};
use sfu::{ConnId, Output, Sfu, SfuConfig, ShardPlace};

const DELAY: Duration = Duration::from_millis(5);

fn shard_addr(i: usize) -> SocketAddr {
    SocketAddr::new([10, 0, 0, 100].into(), 5000 + i as u16)
}

struct Peer {
    addr: SocketAddr,
    rtc: Rtc,
    mid: Option<Mid>,
    got: Vec<u32>,
    sent: u32,
}

impl Peer {
    fn new(addr: &str, now: Instant) -> Peer {
        Peer::with_codec(addr, now, Codec::Vp8)
    }

    /// A peer that offers `codec` alone (VP8 or H.264).
    fn with_codec(addr: &str, now: Instant, codec: Codec) -> Peer {
        let addr: SocketAddr = addr.parse().unwrap();
        let builder = Rtc::builder().clear_codecs();
        let builder = match codec {
            Codec::H264 => builder.enable_h264(true),
            _ => builder.enable_vp8(true),
        };
        let mut rtc = builder.build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Peer {
            addr,
            rtc,
            mid: None,
            got: Vec::new(),
            sent: 0,
        }
    }

    fn offer(&mut self, dir: Direction) -> (String, sfu::str0m::change::SdpPendingOffer) {
        let mut api = self.rtc.sdp_api();
        self.mid = Some(api.add_media(MediaKind::Video, dir, None, None, None));
        let (offer, pending) = api.apply().unwrap();
        (offer.to_sdp_string(), pending)
    }
}

/// What went between the shards.
#[derive(Default)]
struct Between {
    exported: usize,
    keyframe_requests: usize,
    closed: usize,
    ended: usize,
    /// Exports asked for by a shard with viewers waiting for a stream.
    asked: usize,
}

struct World {
    now: Instant,
    shards: Vec<Sfu>,
    peers: Vec<Peer>,
    wire: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Commands for a shard's driver, due at a time: what the server's channels carry.
    mail: Vec<(Instant, usize, Mail)>,
    between: Between,
    signals: Vec<(usize, ConnId, ServerMessage)>,
}

enum Mail {
    Packets(Vec<MirrorPacket>),
    Keyframe(sfu::TrackId, usize),
    Unexport(u32, String),
    End(String, sfu::TrackId),
    /// A source on shard `.1` announced a track under these names.
    Announced(Vec<String>, usize),
    /// Export this stream to that shard.
    ExportTo(String, usize),
    /// Mirror this stream from that shard.
    Open(String, usize, Vec<sfu::mirror::MirrorTrack>),
}

impl World {
    fn new(count: u32) -> World {
        World::with(count, 10_000)
    }

    fn with(count: u32, max_rooms: usize) -> World {
        let now = Instant::now();
        let open_rooms = sfu::OpenRooms::default();
        let shards = (0..count)
            .map(|index| {
                let config = SfuConfig {
                    shard: ShardPlace { index, count },
                    open_rooms: open_rooms.clone(),
                    max_rooms,
                    ..SfuConfig::default()
                };
                let cand = Candidate::host(shard_addr(index as usize), "udp").unwrap();
                Sfu::new(config, vec![cand], 7 + u64::from(index), now)
            })
            .collect();
        World {
            now,
            shards,
            peers: Vec::new(),
            wire: Vec::new(),
            mail: Vec::new(),
            between: Between::default(),
            signals: Vec::new(),
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
                    let Some((pt, codec)) = p
                        .rtc
                        .codec_config()
                        .find(|c| matches!(c.spec().codec, Codec::Vp8 | Codec::H264))
                        .map(|c| (c.pt(), c.spec().codec))
                    else {
                        continue;
                    };
                    let key = n.is_multiple_of(30);
                    let mut frame = match codec {
                        // One Annex B NAL unit: an IDR slice or a non-IDR one.
                        Codec::H264 => vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }],
                        _ => vec![if key { 0x10 } else { 0x11 }],
                    };
                    frame.extend_from_slice(&n.to_be_bytes());
                    frame.resize(1000, 0xab);
                    if let Some(w) = p.rtc.writer(mid) {
                        w.write(pt, now, MediaTime::from_90khz(n as u64 * 3000), frame)
                            .unwrap();
                    }
                }
                next_frame = now + Duration::from_millis(33);
            }
            let (due, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|p| p.0 <= now);
            self.wire = rest;
            for (_, from, to, data) in due {
                if let Some(i) = (0..self.shards.len()).find(|&i| shard_addr(i) == to) {
                    self.shards[i].handle_receive(now, Protocol::Udp, from, to, &data);
                } else if let Some(p) = self.peers.iter_mut().find(|p| p.addr == to) {
                    let r = Receive {
                        proto: Protocol::Udp,
                        source: from,
                        destination: to,
                        contents: data.as_slice().try_into().unwrap(),
                    };
                    let _ = p.rtc.handle_input(Input::Receive(now, r));
                }
            }
            let (due, rest): (Vec<_>, Vec<_>) = self.mail.drain(..).partition(|m| m.0 <= now);
            self.mail = rest;
            for (_, to, mail) in due {
                let s = &mut self.shards[to];
                match mail {
                    Mail::Packets(p) => s.mirror_packets(now, p),
                    Mail::Keyframe(t, l) => s.exported_keyframe(now, t, l),
                    Mail::Unexport(shard, stream) => s.unexport(shard, &stream),
                    Mail::End(stream, track) => s.mirror_track_end(now, &stream, track),
                    Mail::Announced(names, origin) => {
                        for name in s.mirrors_wanted(&names) {
                            self.between.asked += 1;
                            let ask = Mail::ExportTo(name, to);
                            self.mail.push((now + DELAY, origin, ask));
                        }
                    }
                    Mail::ExportTo(stream, mirror) => {
                        if let Some(tracks) = s.export_stream(&stream, mirror as u32)
                            && !tracks.is_empty()
                        {
                            let open = Mail::Open(stream, to, tracks);
                            self.mail.push((now + DELAY, mirror, open));
                        }
                    }
                    Mail::Open(stream, origin, tracks) => {
                        s.mirror_open(now, &stream, origin as u32, tracks)
                    }
                }
            }
            for s in &mut self.shards {
                s.handle_timeout(now);
            }
            for p in &mut self.peers {
                let _ = p.rtc.handle_input(Input::Timeout(now));
            }
            self.drain();
            self.now += Duration::from_millis(1);
        }
    }

    fn drain(&mut self) {
        let now = self.now;
        let shards = self.shards.len();
        for (i, s) in self.shards.iter_mut().enumerate() {
            // The driver hands each shard's exports over in one batch per wake.
            let mut batches: Vec<Vec<MirrorPacket>> = vec![Vec::new(); 4];
            loop {
                match s.poll_output() {
                    Output::Transmit(t) => {
                        self.wire
                            .push((now + DELAY, t.source, t.destination, t.contents.to_vec()))
                    }
                    Output::MirrorKeyframe {
                        origin,
                        track,
                        layer,
                    } => {
                        self.between.keyframe_requests += 1;
                        self.mail.push((
                            now + DELAY,
                            origin as usize,
                            Mail::Keyframe(track, layer),
                        ));
                    }
                    Output::MirrorClosed { origin, stream } => {
                        self.between.closed += 1;
                        self.mail.push((
                            now + DELAY,
                            origin as usize,
                            Mail::Unexport(i as u32, stream),
                        ));
                    }
                    Output::ExportEnded {
                        shard,
                        stream,
                        track,
                    } => {
                        self.between.ended += 1;
                        self.mail
                            .push((now + DELAY, shard as usize, Mail::End(stream, track)));
                    }
                    Output::Announced { names } => {
                        for to in (0..shards).filter(|to| *to != i) {
                            let mail = Mail::Announced(names.clone(), i);
                            self.mail.push((now + DELAY, to, mail));
                        }
                    }
                    Output::Signal(conn, msg) => self.signals.push((i, conn, msg)),
                    Output::Timeout(_) => break,
                    _ => {}
                }
            }
            for (shard, packet) in s.take_exports() {
                self.between.exported += 1;
                batches[shard as usize].push(packet);
            }
            for (to, b) in batches.into_iter().enumerate() {
                if !b.is_empty() {
                    self.mail.push((now + DELAY, to, Mail::Packets(b)));
                }
            }
        }
        for p in &mut self.peers {
            loop {
                match p.rtc.poll_output() {
                    Ok(RtcOutput::Transmit(t)) => {
                        self.wire
                            .push((now + DELAY, t.source, t.destination, t.contents.to_vec()))
                    }
                    Ok(RtcOutput::Event(Event::MediaData(m))) => {
                        if let Some(b) = m.data.get(1..5) {
                            p.got.push(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                        }
                    }
                    Ok(RtcOutput::Event(_)) => {}
                    Ok(RtcOutput::Timeout(_)) | Err(_) => break,
                }
            }
        }
    }

    fn publish(&mut self, shard: usize, addr: &str, stream: &str) -> (usize, String) {
        self.publish_with(shard, addr, stream, Codec::Vp8)
    }

    fn publish_with(
        &mut self,
        shard: usize,
        addr: &str,
        stream: &str,
        codec: Codec,
    ) -> (usize, String) {
        let mut p = Peer::with_codec(addr, self.now, codec);
        let (offer, pending) = p.offer(Direction::SendOnly);
        self.peers.push(p);
        let i = self.peers.len() - 1;
        let s = self.shards[shard]
            .whip_publish(self.now, stream, &offer)
            .unwrap();
        self.answer(i, pending, &s.answer);
        self.drain();
        (i, s.token)
    }

    /// A viewer on `shard` of a stream published on `origin`: the server's WHEP handler's
    /// steps (export on the origin, mirror here) when the two differ.
    fn view(&mut self, shard: usize, origin: usize, addr: &str, stream: &str) -> (usize, String) {
        if shard != origin {
            let tracks = self.shards[origin]
                .export_stream(stream, shard as u32)
                .unwrap();
            assert!(!tracks.is_empty(), "the stream's tracks are exported");
            self.shards[shard].mirror_open(self.now, stream, origin as u32, tracks);
        }
        let mut p = Peer::new(addr, self.now);
        let (offer, pending) = p.offer(Direction::RecvOnly);
        let s = self.shards[shard]
            .whep_play(self.now, stream, &offer, None)
            .unwrap();
        self.peers.push(p);
        let i = self.peers.len() - 1;
        self.answer(i, pending, &s.answer);
        self.drain();
        (i, s.token)
    }
}

fn assert_plays(got: &[u32], who: &str) {
    assert!(got.len() > 45, "{who} got {} frames", got.len());
    assert_eq!(got[0] % 30, 0, "{who} starts at a keyframe: {got:?}");
    assert!(
        got.windows(2).all(|x| x[1] == x[0] + 1),
        "{who}: in order, no gaps: {got:?}"
    );
}

#[test]
fn a_streams_viewers_on_two_shards_all_receive_it_and_each_packet_crosses_once() {
    let mut w = World::new(2);
    let (p, _) = w.publish(0, "10.0.0.1:4000", "live/a");
    w.run(Duration::from_secs(1), &[p]);
    assert!(w.shards[0].has_stream("live/a"));
    assert!(!w.shards[1].has_stream("live/a"), "not published there");

    let (here, _) = w.view(0, 0, "10.0.0.2:4000", "live/a");
    let far: Vec<usize> = (0..3)
        .map(|i| w.view(1, 0, &format!("10.0.0.{}:4000", 3 + i), "live/a").0)
        .collect();
    assert!(
        !w.shards[1].has_stream("live/a"),
        "a mirror is not a source another shard could export from"
    );
    let exported_before = w.between.exported;
    let rtp_in_before = w.shards[0].stats().rtp_in;
    w.run(Duration::from_secs(3), &[p]);

    assert_plays(&w.peers[here].got, "the viewer on the publisher's shard");
    for v in &far {
        assert_plays(&w.peers[*v].got, "a viewer on the other shard");
    }
    // Three viewers over there, and each packet went across once.
    let exported = w.between.exported - exported_before;
    let received = (w.shards[0].stats().rtp_in - rtp_in_before) as usize;
    assert!(received > 90, "{received} packets in");
    assert_eq!(exported, received, "one export per packet received");
    assert!(
        w.shards[1].stats().rtp_out >= 3 * (received as u64) * 9 / 10,
        "the other shard sends to its three viewers: {} packets out",
        w.shards[1].stats().rtp_out
    );
    assert!(
        w.between.keyframe_requests >= 1,
        "the new viewers' keyframe requests went to the origin"
    );
}

#[test]
fn a_mirror_nobody_watches_closes_and_the_origin_stops_sending_it() {
    let mut w = World::new(2);
    let (p, _) = w.publish(0, "10.0.0.1:4000", "live/b");
    w.run(Duration::from_secs(1), &[p]);
    let (v, token) = w.view(1, 0, "10.0.0.2:4000", "live/b");
    w.run(Duration::from_secs(2), &[p]);
    assert_plays(&w.peers[v].got, "the viewer");
    w.shards[1].end_http_session(w.now, &token).unwrap();
    w.run(Duration::from_secs(2), &[p]);
    assert_eq!(w.between.closed, 1, "the mirror closed once");
    let exported = w.between.exported;
    w.run(Duration::from_secs(1), &[p]);
    assert_eq!(w.between.exported, exported, "nothing more crosses");
}

/// The frames a viewer got since `from`, which must be a new publisher's from one of its
/// first two keyframes on (the test's publishers send one every 30 frames and ignore
/// keyframe requests; a mirror opened after the first has passed starts at the second), in
/// order.
fn assert_follows(got: &[u32], from: usize, who: &str) {
    let after = &got[from..];
    assert!(
        after.len() > 30,
        "{who}: {} frames after the republish",
        after.len()
    );
    assert!(
        after[0] == 0 || after[0] == 30,
        "{who} starts at the new publisher's first or second keyframe: {after:?}"
    );
    assert!(
        after.windows(2).all(|x| x[1] == x[0] + 1),
        "{who}: in order, no gaps: {after:?}"
    );
}

#[test]
fn a_far_viewer_waits_when_its_publisher_ends_and_follows_a_republish_on_either_shard() {
    let mut w = World::new(2);
    let (p1, token1) = w.publish(0, "10.0.0.1:4000", "live/c");
    w.run(Duration::from_secs(1), &[p1]);
    let (v, _) = w.view(1, 0, "10.0.0.2:4000", "live/c");
    w.run(Duration::from_secs(2), &[p1]);
    assert_plays(&w.peers[v].got, "the viewer");

    // The publisher goes: the mirror over there goes with its track, the viewer stays.
    w.shards[0].end_http_session(w.now, &token1).unwrap();
    w.run(Duration::from_millis(200), &[]);
    assert!(w.between.ended >= 1, "the origin told the other shard");
    assert_eq!(
        w.shards[1].session_reports().len(),
        1,
        "the viewer over there waits for a republish"
    );
    assert!(!w.shards[1].has_stream("live/c"));

    // Republished on the viewer's own shard: it follows there.
    let before = w.peers[v].got.len();
    let (p2, token2) = w.publish(1, "10.0.0.3:4000", "live/c");
    w.run(Duration::from_secs(3), &[p2]);
    assert_follows(
        &w.peers[v].got,
        before,
        "the viewer (republished on its shard)",
    );
    assert_eq!(w.between.asked, 0, "nothing to ask another shard for");

    // And again on the other shard: the viewer's shard asks it for an export.
    w.shards[1].end_http_session(w.now, &token2).unwrap();
    w.run(Duration::from_millis(500), &[]);
    let before = w.peers[v].got.len();
    let (p3, _) = w.publish(0, "10.0.0.4:4000", "live/c");
    w.run(Duration::from_secs(3), &[p3]);
    assert_eq!(
        w.between.asked, 1,
        "the waiting viewer's shard asked the new origin once"
    );
    assert_follows(
        &w.peers[v].got,
        before,
        "the viewer (republished on the other shard)",
    );
}

/// A republish in a codec the waiting viewer's m-line cannot take: the viewer's shard asks for
/// it, finds nothing to bind, and closes the mirror; the stream's packets stop crossing.
#[test]
fn a_mirror_no_waiting_viewer_can_take_is_closed_again() {
    let mut w = World::new(2);
    let (p1, token1) = w.publish(0, "10.0.0.1:4000", "live/d");
    w.run(Duration::from_secs(1), &[p1]);
    let (v, _) = w.view(1, 0, "10.0.0.2:4000", "live/d");
    w.run(Duration::from_secs(2), &[p1]);
    assert_plays(&w.peers[v].got, "the viewer");
    w.shards[0].end_http_session(w.now, &token1).unwrap();
    w.run(Duration::from_millis(500), &[]);
    let closed = w.between.closed;

    let before = w.peers[v].got.len();
    let (p2, _) = w.publish_with(0, "10.0.0.3:4000", "live/d", Codec::H264);
    w.run(Duration::from_secs(3), &[p2]);
    assert_eq!(
        w.between.asked, 1,
        "the viewer's shard asked once, at the track's announcement"
    );
    assert_eq!(
        w.between.closed,
        closed + 1,
        "and closed the mirror it could not use"
    );
    let exported = w.between.exported;
    w.run(Duration::from_secs(1), &[p2]);
    assert_eq!(
        w.between.exported, exported,
        "nothing crosses for it any more"
    );
    assert_eq!(w.peers[v].got.len(), before, "the VP8 viewer got no H.264");
    assert_eq!(w.shards[1].session_reports().len(), 1, "and still waits");
}

#[test]
fn a_shard_opens_only_its_own_rooms_and_max_rooms_counts_all_shards() {
    let mut w = World::with(2, 1);
    let owner = sfu::shard_of("kitchen", 2);
    let other = 1 - owner;
    let join = |room: &str| ClientMessage::Join {
        room: room.into(),
        name: "a".into(),
        token: None,
        auto_subscribe: true,
        resume: None,
        mode: None,
    };
    let (c1, c2) = (ConnId(1), ConnId(2));
    w.shards[other].connect(c1);
    w.shards[other].handle_signal(w.now, c1, join("kitchen"));
    w.shards[owner].connect(c2);
    w.shards[owner].handle_signal(w.now, c2, join("kitchen"));
    w.drain();
    let refused = w.signals.iter().any(|(s, c, m)| {
        *s == other
            && *c == c1
            && matches!(m, ServerMessage::Error { code: ErrorCode::BadRequest, message } if message.contains("another shard"))
    });
    assert!(refused, "{:?}", w.signals);
    assert!(
        w.signals
            .iter()
            .any(|(s, c, m)| *s == owner && *c == c2 && matches!(m, ServerMessage::Joined { .. }))
    );
    assert_eq!(w.shards[owner].rooms().len(), 1);
    assert!(w.shards[other].rooms().is_empty());

    // One room is the most (rooms.max_rooms = 1), and the other shard knows it is open.
    let elsewhere = (0..)
        .map(|i| format!("room{i}"))
        .find(|r| sfu::shard_of(r, 2) == other)
        .unwrap();
    let c3 = ConnId(3);
    w.shards[other].connect(c3);
    w.shards[other].handle_signal(w.now, c3, join(&elsewhere));
    w.drain();
    assert!(
        w.signals.iter().any(|(s, c, m)| *s == other
            && *c == c3
            && matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::RoomFull,
                    ..
                }
            )),
        "{:?}",
        w.signals
    );
}
