//! A test participant: two str0m peer connections in frame mode, driven the way onair's browser
//! SDK drives a browser's.
//!
//! Published video frames are synthetic VP8: a payload header whose P bit marks keyframes,
//! then the layer index and a frame number, padded to several packets. A receiver can therefore
//! tell exactly which frames arrived, in what order, from which simulcast layer.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sfu::signal::{ClientMessage, PublishTrack, ServerMessage, TrackSource};
use sfu::str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use sfu::str0m::channel::ChannelId;
use sfu::str0m::format::Codec;
use sfu::str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use sfu::str0m::net::{Protocol, Receive};
use sfu::str0m::{Candidate, Event, Input, Output, Rtc};
use sfu::{ConnId, ParticipantId, TrackId};

use crate::link::Link;

/// Simulcast RIDs a test publisher sends, lowest first, as onair's SDK does.
pub const RIDS: [&str; 3] = ["q", "h", "f"];

/// What a client publishes once joined.
#[derive(Debug, Clone, Copy)]
pub struct Publish {
    /// Send a camera-like video track.
    pub video: bool,
    /// Send a microphone-like audio track.
    pub audio: bool,
    /// Send the video as three simulcast layers.
    pub simulcast: bool,
}

/// One frame as a subscriber received it.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    /// The track it came on, from the server's offer.
    pub track: Option<TrackId>,
    /// Arrival time.
    pub at: Instant,
    /// Video or audio.
    pub video: bool,
    /// Simulcast layer it was sent on (0 lowest).
    pub layer: u8,
    /// The publisher's frame number.
    pub number: u32,
    /// A keyframe.
    pub key: bool,
    /// str0m saw no gap before it.
    pub contiguous: bool,
}

/// A participant: publisher and subscriber connections and what they saw.
pub struct Client {
    /// Display name.
    pub name: String,
    /// Its signalling connection.
    pub conn: ConnId,
    /// Whether its signalling connection is up.
    pub online: bool,
    /// The emulated path to the SFU.
    pub link: Link,
    pub_addr: SocketAddr,
    sub_addr: SocketAddr,
    /// The connection the client offers on.
    pub publisher: Rtc,
    /// The connection the server offers on.
    pub subscriber: Rtc,
    pub_deadline: Instant,
    sub_deadline: Instant,
    /// Set by `joined`.
    pub participant_id: Option<ParticipantId>,
    /// Set by `joined`.
    pub resume_token: Option<String>,
    /// What to publish after joining.
    pub publish: Option<Publish>,
    pending_pub: Option<SdpPendingOffer>,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    chat: Option<ChannelId>,
    next_video: Option<Instant>,
    next_audio: Option<Instant>,
    frame_no: u32,
    audio_no: u32,
    /// The audio level (RFC 6464, dBov: 0 loudest, 127 silence) put on each audio packet;
    /// `None` sends none.
    pub audio_dbov: Option<u8>,
    /// Layers (by RID, None without simulcast) whose next frame must be a keyframe.
    key_wanted: HashSet<Option<Rid>>,
    /// Keyframes sent, per layer index.
    pub keyframes_sent: [u32; 3],
    /// Simulcast layers sent, from the lowest (3: all; fewer, as a browser whose bandwidth
    /// estimate holds the top ones back).
    pub layers_sending: usize,
    /// Simulcast layers the server's `layers_needed` left on (as the SDK sets encodings
    /// active); all at first.
    pub layers_active: [bool; 3],
    /// Stop producing media after this time.
    pub stop_media_at: Option<Instant>,
    /// Subscriber m-lines and the tracks they carry.
    pub sub_tracks: HashMap<Mid, TrackId>,
    /// Frames received on the subscriber connection.
    pub frames: Vec<ReceivedFrame>,
    /// Signalling messages other than the ones handled here.
    pub messages: Vec<ServerMessage>,
    /// Data channel messages received.
    pub data: Vec<String>,
    /// Every SDP offer the server sent on the subscriber connection.
    pub offers: Vec<String>,
    out_packets: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    out_signals: Vec<ClientMessage>,
}

fn new_rtc(addr: SocketAddr, now: Instant) -> Rtc {
    new_rtc_with(addr, now, false)
}

/// `red`: Opus with RED (RFC 2198) offered and, where the other side takes it, sent.
fn new_rtc_with(addr: SocketAddr, now: Instant, red: bool) -> Rtc {
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, red)
        .enable_vp8(true)
        .build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("valid candidate"));
    rtc
}

impl Client {
    pub(crate) fn new(name: &str, conn: ConnId, ip: IpAddr, link: Link, now: Instant) -> Client {
        let pub_addr = SocketAddr::new(ip, 40000);
        let sub_addr = SocketAddr::new(ip, 40001);
        Client::with_addrs(name, conn, pub_addr, sub_addr, link, now)
    }

    /// A client whose two connections use the given local addresses (real sockets).
    pub fn with_addrs(
        name: &str,
        conn: ConnId,
        pub_addr: SocketAddr,
        sub_addr: SocketAddr,
        link: Link,
        now: Instant,
    ) -> Client {
        Client {
            name: name.to_owned(),
            conn,
            online: true,
            link,
            pub_addr,
            sub_addr,
            publisher: new_rtc(pub_addr, now),
            subscriber: new_rtc(sub_addr, now),
            pub_deadline: now,
            sub_deadline: now,
            participant_id: None,
            resume_token: None,
            publish: None,
            pending_pub: None,
            video_mid: None,
            audio_mid: None,
            chat: None,
            next_video: None,
            next_audio: None,
            frame_no: 0,
            audio_no: 0,
            audio_dbov: None,
            key_wanted: HashSet::new(),
            keyframes_sent: [0; 3],
            layers_sending: 3,
            layers_active: [true; 3],
            stop_media_at: None,
            sub_tracks: HashMap::new(),
            frames: Vec::new(),
            messages: Vec::new(),
            data: Vec::new(),
            offers: Vec::new(),
            out_packets: Vec::new(),
            out_signals: Vec::new(),
        }
    }

    /// Offers Opus with RED on both connections, as Chromium does (before `join`): str0m then
    /// sends its audio wrapped in RED and recovers lost frames from the redundancy.
    pub fn use_red(&mut self, now: Instant) {
        self.publisher = new_rtc_with(self.pub_addr, now, true);
        self.subscriber = new_rtc_with(self.sub_addr, now, true);
    }

    /// How many audio frames this client has sent.
    pub fn frames_sent_audio(&self) -> u32 {
        self.audio_no
    }

    /// The `join` this client sends.
    pub fn join_message(&self, room: &str) -> ClientMessage {
        ClientMessage::Join {
            room: room.to_owned(),
            name: self.name.clone(),
            token: None,
            auto_subscribe: true,
            resume: None,
            mode: None,
        }
    }

    /// Whether `addr` is one of this client's connections.
    pub fn owns(&self, addr: SocketAddr) -> bool {
        addr == self.pub_addr || addr == self.sub_addr
    }

    /// When the client next needs `tick`.
    pub fn deadline(&self) -> Instant {
        let mut t = self.pub_deadline.min(self.sub_deadline);
        for m in [self.next_video, self.next_audio].into_iter().flatten() {
            t = t.min(m);
        }
        t
    }

    /// Datagrams (from, to, bytes) and signalling messages to send.
    #[allow(clippy::type_complexity)]
    pub fn take_outputs(&mut self) -> (Vec<(SocketAddr, SocketAddr, Vec<u8>)>, Vec<ClientMessage>) {
        (
            std::mem::take(&mut self.out_packets),
            std::mem::take(&mut self.out_signals),
        )
    }

    /// Sends text on the `chat` data channel.
    pub fn send_chat(&mut self, now: Instant, text: &str) -> bool {
        let Some(id) = self.chat else { return false };
        let ok = self
            .publisher
            .channel(id)
            .is_some_and(|mut c| c.write(false, text.as_bytes()).unwrap_or(false));
        self.drain(now, true);
        ok
    }

    /// Received video frames, per track.
    pub fn video_frames(&self, track: TrackId) -> Vec<&ReceivedFrame> {
        self.frames
            .iter()
            .filter(|f| f.video && f.track == Some(track))
            .collect()
    }

    /// A datagram arrived for one of the client's connections.
    pub fn receive(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: to,
                contents,
            },
        );
        let publisher = to == self.pub_addr;
        let rtc = if publisher {
            &mut self.publisher
        } else {
            &mut self.subscriber
        };
        if rtc.handle_input(input).is_ok() {
            self.drain(now, publisher);
        }
    }

    /// Time passed: timeouts and media production.
    pub fn tick(&mut self, now: Instant) {
        if self.pub_deadline <= now && self.publisher.handle_input(Input::Timeout(now)).is_ok() {
            self.drain(now, true);
        }
        if self.sub_deadline <= now && self.subscriber.handle_input(Input::Timeout(now)).is_ok() {
            self.drain(now, false);
        }
        if self.stop_media_at.is_some_and(|t| now >= t) {
            self.next_video = None;
            self.next_audio = None;
        }
        if self.next_video.is_some_and(|t| t <= now) {
            self.send_video(now);
            self.next_video = Some(now + Duration::from_millis(33));
        }
        if self.next_audio.is_some_and(|t| t <= now) {
            self.send_audio(now);
            self.next_audio = Some(now + Duration::from_millis(20));
        }
    }

    fn send_video(&mut self, now: Instant) {
        let (Some(mid), Some(p)) = (self.video_mid, self.publish) else {
            return;
        };
        let Some(pt) = self
            .publisher
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
        else {
            return;
        };
        let n = self.frame_no;
        self.frame_no += 1;
        let time = MediaTime::from_90khz(n as u64 * 3000);
        let layers: Vec<Option<Rid>> = if p.simulcast {
            RIDS.iter().map(|r| Some(Rid::from(*r))).collect()
        } else {
            vec![None]
        };
        for (i, rid) in layers.into_iter().enumerate().take(self.layers_sending) {
            if p.simulcast && !self.layers_active[i] {
                continue;
            }
            let key = self.key_wanted.remove(&rid);
            if key {
                self.keyframes_sent[i] += 1;
            }
            // VP8 payload header: bit 0 is P, 0 for a keyframe.
            let mut frame = vec![if key { 0x10 } else { 0x11 }, i as u8];
            frame.extend_from_slice(&n.to_be_bytes());
            // Lower simulcast layers are smaller, as real ones are.
            let shift = if p.simulcast { 2 - i.min(2) } else { 0 };
            let size = if key { 4000 } else { 1500 } >> shift;
            frame.resize(size.max(16), 0xab);
            let Some(w) = self.publisher.writer(mid) else {
                return;
            };
            let w = match rid {
                Some(r) => w.rid(r),
                None => w,
            };
            let _ = w.write(pt, now, time, frame);
            self.drain(now, true);
        }
    }

    fn send_audio(&mut self, now: Instant) {
        let Some(mid) = self.audio_mid else { return };
        let Some(pt) = self
            .publisher
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
        else {
            return;
        };
        let n = self.audio_no;
        self.audio_no += 1;
        let mut frame = vec![0xfc];
        frame.extend_from_slice(&n.to_be_bytes());
        let time = MediaTime::new(
            n as u64 * 960,
            sfu::str0m::media::Frequency::FORTY_EIGHT_KHZ,
        );
        if let Some(mut w) = self.publisher.writer(mid) {
            if let Some(dbov) = self.audio_dbov {
                let dbov = dbov.min(127) as i8;
                w = w.audio_level(-dbov, dbov < 127);
            }
            let _ = w.write(pt, now, time, frame);
        }
        self.drain(now, true);
    }

    /// A signalling message from the server.
    pub fn on_signal(&mut self, now: Instant, msg: ServerMessage) {
        if matches!(msg, ServerMessage::Joined { .. }) {
            self.messages.push(msg.clone());
        }
        match msg {
            ServerMessage::Joined {
                participant_id,
                resume_token,
                mode,
                ..
            } => {
                let first = self.participant_id.is_none();
                self.participant_id = Some(participant_id);
                self.resume_token = Some(resume_token);
                self.online = true;
                // A peer-to-peer room has no SFU connection to publish on.
                if first && mode == sfu::signal::RoomMode::Sfu {
                    self.offer_publish(now);
                }
            }
            ServerMessage::Answer { sdp } => {
                let (Some(pending), Ok(answer)) =
                    (self.pending_pub.take(), SdpAnswer::from_sdp_string(&sdp))
                else {
                    return;
                };
                if self
                    .publisher
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .is_ok()
                {
                    self.drain(now, true);
                    if self.video_mid.is_some() {
                        self.next_video = Some(now);
                    }
                    if self.audio_mid.is_some() {
                        self.next_audio = Some(now);
                    }
                }
            }
            ServerMessage::Offer { sdp, tracks } => {
                self.offers.push(sdp.clone());
                for t in tracks {
                    self.sub_tracks
                        .insert(Mid::from(t.mid.as_str()), t.track_id);
                }
                let Ok(offer) = SdpOffer::from_sdp_string(&sdp) else {
                    return;
                };
                if let Ok(answer) = self.subscriber.sdp_api().accept_offer(offer) {
                    self.drain(now, false);
                    self.out_signals.push(ClientMessage::Answer {
                        sdp: answer.to_sdp_string(),
                    });
                }
            }
            ServerMessage::LayersNeeded { ref rids, .. } => {
                for (i, r) in RIDS.iter().enumerate() {
                    let on = rids.iter().any(|x| x == r);
                    // An encoder turned back on starts with a keyframe.
                    if on && !self.layers_active[i] {
                        self.key_wanted.insert(Some(Rid::from(*r)));
                    }
                    self.layers_active[i] = on;
                }
                self.messages.push(msg);
            }
            other => self.messages.push(other),
        }
    }

    fn offer_publish(&mut self, now: Instant) {
        let publish = self.publish;
        let mut api = self.publisher.sdp_api();
        let mut tracks = Vec::new();
        if let Some(p) = publish {
            if p.audio {
                let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                self.audio_mid = Some(mid);
                tracks.push(PublishTrack {
                    mid: mid.to_string(),
                    source: TrackSource::Microphone,
                    width: None,
                    height: None,
                    simulcast: None,
                });
            }
            if p.video {
                let simulcast = p.simulcast.then(|| {
                    let mut s = Simulcast::new();
                    for r in RIDS {
                        s.add_send_layer(SimulcastLayer::new(r));
                    }
                    s
                });
                let mid =
                    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
                self.video_mid = Some(mid);
                tracks.push(PublishTrack {
                    mid: mid.to_string(),
                    source: TrackSource::Camera,
                    width: Some(1280),
                    height: Some(720),
                    simulcast: p
                        .simulcast
                        .then(|| RIDS.iter().map(|r| r.to_string()).collect()),
                });
                if p.simulcast {
                    self.key_wanted
                        .extend(RIDS.iter().map(|r| Some(Rid::from(*r))));
                } else {
                    self.key_wanted.insert(None);
                }
            }
        }
        let chat = api.add_channel("chat".into());
        self.chat = Some(chat);
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        self.pending_pub = Some(pending);
        self.drain(now, true);
        self.out_signals.push(ClientMessage::Offer {
            sdp: offer.to_sdp_string(),
            tracks,
        });
    }

    fn drain(&mut self, now: Instant, publisher: bool) {
        loop {
            let rtc = if publisher {
                &mut self.publisher
            } else {
                &mut self.subscriber
            };
            let out = match rtc.poll_output() {
                Ok(o) => o,
                Err(_) => return,
            };
            match out {
                Output::Timeout(t) => {
                    if publisher {
                        self.pub_deadline = t;
                    } else {
                        self.sub_deadline = t;
                    }
                    return;
                }
                Output::Transmit(t) => {
                    self.out_packets
                        .push((t.source, t.destination, t.contents.to_vec()));
                }
                Output::Event(e) => self.on_event(now, e),
            }
        }
    }

    fn on_event(&mut self, now: Instant, e: Event) {
        match e {
            Event::KeyframeRequest(r) => {
                self.key_wanted.insert(r.rid);
            }
            Event::ChannelOpen(id, label) if label == "chat" => self.chat = Some(id),
            Event::ChannelData(d) => self
                .data
                .push(String::from_utf8_lossy(&d.data).into_owned()),
            Event::MediaData(m) => {
                let video = m.params.spec().codec == Codec::Vp8;
                let d = &m.data;
                let (key, layer, number) = if video && d.len() >= 6 {
                    (
                        d[0] & 1 == 0,
                        d[1],
                        u32::from_be_bytes([d[2], d[3], d[4], d[5]]),
                    )
                } else if d.len() >= 5 {
                    (false, 0, u32::from_be_bytes([d[1], d[2], d[3], d[4]]))
                } else {
                    return;
                };
                if video && !m.contiguous {
                    // As a browser does: a frame after a gap cannot be decoded, ask for a
                    // keyframe. (Inside the drain loop, where str0m allows mutations.)
                    if let Some(mut w) = self.subscriber.writer(m.mid) {
                        let _ =
                            w.request_keyframe(None, sfu::str0m::media::KeyframeRequestKind::Pli);
                    }
                }
                self.frames.push(ReceivedFrame {
                    track: self.sub_tracks.get(&m.mid).copied(),
                    at: now,
                    video,
                    layer,
                    number,
                    key,
                    contiguous: m.contiguous,
                });
            }
            _ => {}
        }
    }
}
