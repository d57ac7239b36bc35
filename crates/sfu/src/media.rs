//! Events from peer connections: incoming tracks, RTP to forward, keyframe requests, data
//! channel messages. This is the hot path: no depacketizing, and the payload of a forwarded
//! packet is shared (`Arc<[u8]>`) between all subscribers, never copied.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::{Codec, PayloadParams};
use str0m::media::Pt;
use str0m::rtp::{ExtensionValues, Ssrc};

use str0m::media::{Direction, KeyframeRequest, KeyframeRequestKind, MediaAdded, MediaKind, Mid};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Event, IceConnectionState};
use tracing::{debug, info, warn};

use crate::codec::{Vp9Desc, is_keyframe_start, picture_heights};
use crate::forward::{LayerInfo, SvcVerdict, Verdict, choose_layer};
use crate::ids::{ParticipantId, PeerId, TrackId};
use crate::sfu::{Down, Layer, Output, Peer, Sfu, Track};
use crate::signal::{ErrorCode, PcKind, ServerMessage, TrackKind, TrackSource};

/// Packets kept per video track for replay when a subscriber's epoch starts late (about one
/// second of a three-layer simulcast at typical rates).
const RECENT_PACKETS: usize = 256;

/// How far behind a paced subscriber connection's clock may be when a packet is written to it
/// (see `Legs::write`). str0m groups what it sent within 5 ms for its delay estimate, so an
/// error under that is mostly absorbed.
const CLOCK_SLACK: Duration = Duration::from_millis(2);

/// A forwarded packet as kept in a track's recent-packet cache.
#[derive(Clone)]
pub(crate) struct Cached {
    pub(crate) layer: usize,
    ssrc: Ssrc,
    seq: u64,
    time: u32,
    arrival: Instant,
    key: bool,
    pt: Pt,
    marker: bool,
    ext: ExtensionValues,
    pub(crate) payload: Arc<[u8]>,
    /// A RED packet's primary block, for subscribers that did not negotiate RED.
    primary: Option<Arc<[u8]>>,
}

impl Cached {
    /// A packet made here rather than received (hub_source.rs): one layer, no extensions.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn made(
        ssrc: Ssrc,
        seq: u64,
        time: u32,
        arrival: Instant,
        key: bool,
        pt: Pt,
        marker: bool,
        payload: Arc<[u8]>,
    ) -> Cached {
        Cached {
            layer: 0,
            ssrc,
            seq,
            time,
            arrival,
            key,
            pt,
            marker,
            ext: ExtensionValues::default(),
            payload,
            primary: None,
        }
    }
}

/// One packet for the hub's reassembly (a received one, or one recovered from RED).
#[derive(Clone, Copy)]
struct HubPacket<'a> {
    seq: u64,
    ts: u32,
    marker: bool,
    payload: &'a Arc<[u8]>,
}

impl<'a> HubPacket<'a> {
    fn of(pkt: &'a RtpPacket) -> Self {
        HubPacket {
            seq: *pkt.seq_no,
            ts: pkt.header.timestamp,
            marker: pkt.header.marker,
            payload: &pkt.payload,
        }
    }
}

/// What writing to subscriber legs needs of the SFU, borrowed apart from the track being
/// forwarded.
struct Legs<'a> {
    peers: &'a mut BTreeMap<PeerId, Peer>,
    out: &'a mut VecDeque<Output>,
    events: &'a mut VecDeque<(PeerId, Event)>,
    in_params: Option<PayloadParams>,
    video: bool,
    /// VP8: picture ids are renumbered per leg across layer switches (vp8.rs).
    vp8: bool,
    sent: u64,
    now: Instant,
}

impl Legs<'_> {
    /// Runs one packet through one subscriber's forwarder and, if it passes, writes it to the
    /// subscriber's connection and drains that connection.
    fn forward(&mut self, down: &mut Down, c: &Cached) -> Verdict {
        let verdict = down
            .fwd
            .on_packet(c.layer, c.ssrc, c.seq, c.time, c.arrival, c.key);
        if let Verdict::Forward { seq, time } = verdict {
            self.write(down, c, seq, time, c.marker);
        }
        verdict
    }

    /// The same for a packet of a VP9 SVC stream, thinned to the subscriber's spatial layer.
    fn forward_svc(&mut self, down: &mut Down, c: &Cached, desc: Vp9Desc) -> SvcVerdict {
        let verdict = down
            .fwd
            .on_svc_packet(c.ssrc, c.seq, c.time, c.arrival, desc, c.marker);
        if let SvcVerdict::Forward { seq, time, marker } = verdict {
            self.write(down, c, seq, time, marker);
        }
        verdict
    }

    /// Writes one rewritten packet to a subscriber's connection and drains that connection.
    fn write(&mut self, down: &mut Down, c: &Cached, seq: u64, time: u32, marker: bool) {
        let Some(sub) = self.peers.get_mut(&down.peer) else {
            return;
        };
        let out = match down.pts.iter().find(|(i, _)| *i == c.pt) {
            Some((_, o)) => *o,
            None => {
                let red_in = self.in_params.is_some_and(|p| p.red() == Some(c.pt));
                let out = self
                    .in_params
                    .and_then(|p| sub.rtc.codec_config().match_params(p))
                    .map(|p| match (red_in, p.red()) {
                        // RED to a subscriber that has it: as it came.
                        (true, Some(red)) => (red, false),
                        // RED to one that has not: the primary block only.
                        (true, None) => (p.pt(), true),
                        (false, _) => (p.pt(), false),
                    });
                down.pts.push((c.pt, out));
                if red_in {
                    down.red = out.is_some_and(|(_, strip)| !strip);
                    // The blocks inside name the publisher's Opus payload type; a subscriber
                    // that numbered Opus otherwise needs them renamed.
                    let theirs = self
                        .in_params
                        .and_then(|p| sub.rtc.codec_config().match_params(p))
                        .map(|p| *p.pt());
                    let ours = self.in_params.map(|p| *p.pt());
                    down.red_retag = theirs.filter(|t| Some(*t) != ours);
                }
                out
            }
        };
        let Some((pt, strip)) = out else { return };
        let payload = match (&c.primary, strip, down.red_retag) {
            (Some(primary), true, _) => primary.clone(),
            (Some(_), false, Some(pt)) => crate::red::retag(&c.payload, pt).into(),
            _ => c.payload.clone(),
        };
        // str0m stamps a packet with the connection's last known time, and its delay-based
        // estimate compares those stamps with the client's arrival times: a clock left stale
        // for tens of milliseconds makes packets look sent at once and arrive spread out, which
        // reads as a queue building. Bringing it up to date costs a str0m timeout pass, so only
        // paced connections do it, and only when their clock is [`CLOCK_SLACK`] behind. (In
        // `onair-bench compare 50` with allocation on: 48.9 k forwarded packets per CPU-second
        // with this slack, 50.0 k with 10 ms, 51.8 k with none, in runs where Janus moved by as
        // much: no cost above the noise.)
        if sub.paced && self.now >= sub.clock + CLOCK_SLACK {
            sub.clock = self.now;
            if let Err(e) = sub.rtc.handle_input(str0m::Input::Timeout(self.now)) {
                warn!(peer = down.peer.0, "subscriber failed: {e}");
                sub.rtc.disconnect();
                return;
            }
        }
        let mut direct = sub.rtc.direct_api();
        let Some(tx) = direct.stream_tx_by_mid(down.mid, None) else {
            return; // not yet set up by str0m
        };
        let mut ext = c.ext.clone();
        // These name the publisher's m-line and layer; the subscriber's m-line has its own.
        ext.mid = None;
        ext.rid = None;
        ext.rid_repair = None;
        let mut write = RtpWrite::new(pt, seq.into(), time, c.arrival, payload)
            .marker(marker)
            .ext_vals(ext)
            .nackable(self.video);
        if self.vp8
            && let Some(patch) = down.vp8.patch(down.fwd.switches, &c.payload)
        {
            write = write.vp8_patch(patch);
        }
        tx.write_rtp(write);
        self.sent += 1;
        // str0m's invariant: a full drain after each mutation.
        crate::sfu::drain_peer(down.peer, sub, self.now, self.out, self.events);
    }
}

/// Simulcast RIDs or SVC spatial layers per track; more are ignored.
pub(crate) const MAX_LAYERS: usize = 8;

/// Layer descriptions for one packet's decisions, without allocating.
pub(crate) struct LayerInfos {
    list: [LayerInfo; MAX_LAYERS],
    len: usize,
}

impl LayerInfos {
    pub(crate) fn as_slice(&self) -> &[LayerInfo] {
        &self.list[..self.len]
    }
}

impl Track {
    /// Expected height of each layer: the declared height for the top one, halved per step down
    /// (Chrome's default simulcast scaling, which the SDK also uses).
    /// What the layer chooser needs, on the stack: this runs for every packet of a track.
    pub(crate) fn layer_infos(&self, now: Instant, inactive_after: Duration) -> LayerInfos {
        let top = self.height.unwrap_or(720);
        let n = self.layers.len().min(MAX_LAYERS);
        let mut infos = LayerInfos {
            list: [LayerInfo {
                height: 0,
                active: false,
            }; MAX_LAYERS],
            len: n,
        };
        for (i, l) in self.layers.iter().take(n).enumerate() {
            infos.list[i] = LayerInfo {
                height: l.height.unwrap_or(top >> (n - 1 - i)),
                // A layer never seen counts as active for a while after the track's first
                // packet: the layers of one frame arrive one after the other, and choosing
                // among the first arrivals only would switch down and back up at once.
                active: match l.last_seen {
                    Some(t) => now < t + inactive_after,
                    None => self.first_packet.is_none_or(|t| now < t + inactive_after),
                },
            };
        }
        infos
    }

    pub(crate) fn choose_layer(
        &self,
        now: Instant,
        max_height: Option<u32>,
        inactive_after: Duration,
    ) -> usize {
        choose_layer(self.layer_infos(now, inactive_after).as_slice(), max_height)
    }
}

/// Simulcast RIDs lowest layer first, for publishers that did not say (WHIP): the names Chrome,
/// OBS and the WHIP clients commonly use are recognised; others keep the offer's order.
fn order_rids(mut rids: Vec<str0m::media::Rid>) -> Vec<str0m::media::Rid> {
    let rank = |r: &str0m::media::Rid| match r.to_string().to_ascii_lowercase().as_str() {
        "q" | "l" | "low" => Some(0),
        "h" | "m" | "mid" | "medium" => Some(1),
        "f" | "high" | "full" => Some(2),
        _ => None,
    };
    if rids.iter().all(|r| rank(r).is_some()) {
        rids.sort_by_key(rank);
    }
    rids
}

impl Sfu {
    /// Handles events drained from peers until none are left (handling one may cause others).
    pub(crate) fn process_events(&mut self) {
        while let Some((peer, event)) = self.events.pop_front() {
            self.handle_event(peer, event);
        }
    }

    fn handle_event(&mut self, peer_id: PeerId, event: Event) {
        let Some(peer) = self.peers.get(&peer_id) else {
            return;
        };
        let (owner, kind) = (peer.owner, peer.kind);
        match event {
            Event::RtpPacket(pkt) if kind == PcKind::Publisher => self.on_rtp(peer_id, pkt),
            Event::MediaAdded(m) if kind == PcKind::Publisher => self.on_media_added(peer_id, m),
            Event::MediaChanged(m) if kind == PcKind::Publisher => {
                if matches!(m.direction, Direction::Inactive | Direction::SendOnly) {
                    let track = self
                        .participants
                        .get(&owner)
                        .and_then(|p| p.published.get(&m.mid).copied());
                    if let Some(t) = track {
                        self.unpublish(t);
                    }
                }
            }
            Event::KeyframeRequest(req) if kind == PcKind::Subscriber => {
                self.on_subscriber_keyframe_request(peer_id, req)
            }
            Event::EgressBitrateEstimate(e) if kind == PcKind::Subscriber => {
                self.on_estimate(peer_id, e)
            }
            // The m-lines' reports come before the connection's (str0m emits them so).
            Event::MediaIngressStats(s) => self.on_ingress_stats(peer_id, &s),
            Event::MediaEgressStats(s) => self.on_egress_stats(peer_id, &s),
            Event::PeerStats(s) => {
                if kind == PcKind::Subscriber && self.peers.get(&peer_id).is_some_and(|p| p.paced) {
                    self.on_peer_stats(peer_id, &s);
                }
                self.on_quality_stats(peer_id, &s);
            }
            Event::ChannelOpen(id, label) => {
                debug!(participant = %owner, label, "data channel open");
                if let Some(p) = self.participants.get_mut(&owner) {
                    p.channels.insert(id, label);
                }
            }
            Event::ChannelClose(id) => {
                if let Some(p) = self.participants.get_mut(&owner) {
                    p.channels.remove(&id);
                }
            }
            Event::ChannelData(d) => self.relay_data(owner, d.id, &d.data),
            Event::Closed => {
                info!(participant = %owner, pc = ?kind, "peer connection closed by the remote side");
                self.http_session_closed(owner);
            }
            Event::IceConnectionStateChange(s) => {
                debug!(participant = %owner, pc = ?kind, "ICE {s:?}");
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.quality.ice = Some(s);
                }
                self.on_ice_state(peer_id, s);
                self.http_session_ice(owner, s);
            }
            Event::Connected => self.http_session_connected(owner),
            _ => {}
        }
    }

    fn on_media_added(&mut self, peer_id: PeerId, m: MediaAdded) {
        let Some(owner) = self.peers.get(&peer_id).map(|p| p.owner) else {
            return;
        };
        if m.direction != Direction::RecvOnly {
            return; // only what the client sends to us is a published track
        }
        let tid = TrackId(self.next_id());
        let Some(p) = self.participants.get_mut(&owner) else {
            return;
        };
        let meta = p
            .signalling
            .as_mut()
            .and_then(|s| s.publish_meta.remove(&m.mid.to_string()));
        let kind = match m.kind {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        };
        let source = meta.as_ref().map_or(
            match kind {
                TrackKind::Audio => TrackSource::Microphone,
                TrackKind::Video => TrackSource::Camera,
            },
            |m| m.source,
        );
        if !p.grant.may_publish(source) {
            // An m-line the offer did not describe, of a source the token does not grant:
            // negotiated, never published.
            warn!(participant = %owner, mid = %m.mid, ?source, "not granted: not published");
            return;
        }
        let rids: Vec<_> = m
            .simulcast
            .map(|s| s.recv.iter().map(|l| l.rid).collect())
            .unwrap_or_default();
        // The SDK lists RIDs lowest first; keep its order when it matches what was negotiated.
        let rids = match meta.as_ref().and_then(|m| m.simulcast.clone()) {
            Some(declared) if declared.len() == rids.len() => declared
                .iter()
                .map(|r| str0m::media::Rid::from(r.as_str()))
                .collect(),
            _ => order_rids(rids),
        };
        p.published.insert(m.mid, tid);
        debug!(participant = %owner, track = %tid, mid = %m.mid, ?kind, "track added");
        let track = Track {
            width: meta.as_ref().and_then(|m| m.width),
            height: meta.as_ref().and_then(|m| m.height),
            ..Track::new(tid, owner, (peer_id, m.mid), kind, source, rids)
        };
        self.tracks.insert(tid, track);
    }

    fn on_rtp(&mut self, peer_id: PeerId, mut pkt: RtpPacket) {
        self.stats.rtp_in += 1;
        let now = self.now;
        let ssrc = pkt.header.ssrc;
        let Some((tid, layer)) = self.resolve_ssrc(peer_id, ssrc) else {
            return;
        };
        let pt_in = pkt.header.payload_type;
        // The publisher's codec for this payload type: its own, or the one its RED wraps.
        let in_params = self.peers.get(&peer_id).and_then(|p| {
            p.rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.pt() == pt_in || p.red() == Some(pt_in))
                .copied()
        });
        // RED audio (RFC 2198): forwarded whole where the subscriber negotiated RED too; the
        // hub (recording, HLS, WHEP viewers of hub streams) and other subscribers get the
        // primary block.
        let mut red_whole = None;
        if in_params.is_some_and(|p| p.red() == Some(pt_in)) {
            match crate::red::primary(&pkt.payload) {
                Ok(range) => {
                    let primary: Arc<[u8]> = Arc::from(&pkt.payload[range]);
                    red_whole = Some(std::mem::replace(&mut pkt.payload, primary));
                }
                Err(e) => {
                    debug!(track = %tid, "dropped a RED packet: {e}");
                    return;
                }
            }
        }
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        // A VP9 stream with layer indices is SVC: its spatial layers count as the track's
        // layers (learnt as they appear), all on one SSRC.
        let svc = match track.codec.map(|c| c.spec().codec) {
            Some(str0m::format::Codec::Vp9) if track.rids.is_empty() => {
                Vp9Desc::parse(&pkt.payload).filter(|d| d.layered)
            }
            _ => None,
        };
        let layer = match svc {
            Some(d) => {
                let sid = d.sid as usize;
                while track.layers.len() <= sid.min(MAX_LAYERS - 1) {
                    track.layers.push(Layer::default());
                    debug!(track = %tid, layers = track.layers.len(), "VP9 SVC spatial layers");
                }
                sid
            }
            None => layer,
        };
        if let Some(l) = track.layers.get_mut(layer) {
            l.last_seen = Some(now);
            // Only the allocator reads the rates: no per-packet work for it when it is off.
            if self.config.bandwidth_allocation {
                l.rate.add(now, pkt.payload.len());
            }
        }
        track.first_packet.get_or_insert(now);
        track.red |= red_whole.is_some();
        if track.kind == TrackKind::Audio
            && !track.muted
            && let Some(level) = pkt.header.ext_vals.audio_level
        {
            // str0m gives -dBov (0 loudest, -127 silence).
            self.speakers
                .observe(tid, track.owner, level.unsigned_abs());
        }
        track.bytes_in += pkt.payload.len() as u64;
        if track.codec.is_none() {
            let Some(params) = in_params else {
                return;
            };
            track.codec = Some(params);
            let base = self
                .participants
                .get_mut(&track.owner)
                .map_or(now, |p| *p.media_base.get_or_insert(now));
            track.assembler = crate::depacketize::Assembler::new(
                params.spec().codec,
                params.spec().clock_rate.get(),
                now.saturating_duration_since(base).as_micros() as u64,
            );
            self.announce(tid);
            // WHEP viewers bound by the announcement forward (and the hub gets) this packet:
            // it is usually a keyframe's first. VP9's SVC layers are read from the next one on,
            // but the hub's reassembly needs this one (a keyframe's start) too.
            if params.spec().codec == str0m::format::Codec::Vp9 {
                self.feed_hub(tid, layer, svc.is_some(), HubPacket::of(&pkt));
                return;
            }
        }
        let (server_muted, audio) = self.tracks.get(&tid).map_or((false, false), |t| {
            (t.server_muted, t.kind == TrackKind::Audio)
        });
        // Muted by the operator: nobody gets it, not even recordings and LL-HLS.
        if server_muted {
            return;
        }
        if audio {
            self.feed_hub_audio(tid, &pkt, red_whole.as_ref());
        } else {
            self.feed_hub(tid, layer, svc.is_some(), HubPacket::of(&pkt));
        }
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let codec = track.codec.map(|c| c.spec().codec);
        let key = codec.is_some_and(|c| is_keyframe_start(c, &pkt.payload));
        let (payload, primary) = match red_whole {
            Some(whole) => {
                // On with the two frames before it (red.rs: RedHistory).
                let out = track
                    .red_history
                    .rebuild(*pkt.seq_no, pkt.header.timestamp, &whole, &pkt.payload)
                    .unwrap_or(whole);
                (out, Some(pkt.payload))
            }
            None => (pkt.payload, None),
        };
        let packet = Cached {
            layer,
            ssrc,
            seq: *pkt.seq_no,
            time: pkt.header.timestamp,
            arrival: pkt.timestamp,
            key,
            pt: pt_in,
            marker: pkt.header.marker,
            ext: pkt.header.ext_vals,
            payload,
            primary,
        };
        // Other shards with viewers of this stream get the packet as it is (mirror.rs).
        for (shard, _) in &track.exports {
            self.exports.push((
                *shard,
                crate::mirror::MirrorPacket {
                    track: tid,
                    packet: packet.clone(),
                    in_params,
                    svc,
                },
            ));
        }
        self.fan_out(tid, packet, in_params, svc);
    }

    /// Hands one packet of a track to every subscriber leg of it (its forwarder decides), and
    /// keeps it for replay. A packet from the track's publisher, or from another shard's
    /// (mirror.rs).
    pub(crate) fn fan_out(
        &mut self,
        tid: TrackId,
        packet: Cached,
        in_params: Option<PayloadParams>,
        svc: Option<Vp9Desc>,
    ) {
        let now = self.now;
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let (layer, ssrc) = (packet.layer, packet.ssrc);
        let codec = track.codec.map(|c| c.spec().codec);
        let video = track.kind == TrackKind::Video;
        let infos = track.layer_infos(now, self.config.layer_inactive_after);
        let infos = infos.as_slice();
        if packet.key {
            if let Some(l) = track.layers.get_mut(layer) {
                l.keyframes.satisfied();
            }
            // Real picture heights, for the layer choice (SVC: all layers from one packet).
            let heights = codec.map(|c| picture_heights(c, &packet.payload));
            match (svc, heights.as_deref()) {
                (_, None | Some([])) => {}
                (Some(_), Some(hs)) => {
                    while track.layers.len() < hs.len().min(MAX_LAYERS) {
                        track.layers.push(Layer::default());
                    }
                    for (l, h) in track.layers.iter_mut().zip(hs) {
                        l.height = Some(*h);
                    }
                }
                (None, Some([h, ..])) => {
                    if let Some(l) = track.layers.get_mut(layer) {
                        l.height = Some(*h);
                    }
                }
            }
        }
        let mut keyframe_wanted: Vec<usize> = Vec::new();
        let mut legs = Legs {
            peers: &mut self.peers,
            out: &mut self.out,
            events: &mut self.events,
            in_params,
            video,
            vp8: in_params.is_some_and(|p| p.spec().codec == Codec::Vp8),
            sent: 0,
            now: self.now,
        };
        let Track {
            downstream,
            recent,
            from_hub,
            ..
        } = track;
        // A hub track's viewer starts once connected, with the frames since the last keyframe
        // (`replay_hub_gop`): a packet before that would be lost, and no keyframe would follow
        // on request.
        let from_hub = *from_hub;
        let waiting = |peers: &BTreeMap<PeerId, Peer>, down: &Down| {
            from_hub && !peers.get(&down.peer).is_some_and(|p| p.rtc.is_connected())
        };
        if let Some(desc) = svc {
            for down in downstream.iter_mut() {
                let sid = down.choose_layer(infos) as u8;
                if down.fwd.set_spatial_target(sid) {
                    keyframe_wanted.push(0);
                }
                if legs.forward_svc(down, &packet, desc) == SvcVerdict::WaitKeyframe {
                    keyframe_wanted.push(0);
                }
            }
        }
        for down in downstream.iter_mut().filter(|_| svc.is_none()) {
            if waiting(legs.peers, down) {
                continue;
            }
            if infos.len() > 1 && down.fwd.set_target(down.choose_layer(infos)) {
                keyframe_wanted.push(down.fwd.target());
            }
            let epoch = down.fwd.switches;
            match legs.forward(down, &packet) {
                Verdict::Forward { .. } if video && down.fwd.switches != epoch => {
                    debug!(track = %tid, peer = down.peer.0, layer, "layer starts at a keyframe");
                    // A new epoch began at this keyframe. Packets after it that arrived earlier
                    // (the keyframe's first packet was late, repaired by NACK) were dropped for
                    // this subscriber: replay them from the cache, in order.
                    let mut later: Vec<&Cached> = recent
                        .iter()
                        .filter(|c| c.layer == layer && c.ssrc == ssrc && c.seq > packet.seq)
                        .collect();
                    later.sort_by_key(|c| c.seq);
                    for c in later {
                        legs.forward(down, c);
                    }
                }
                Verdict::WaitKeyframe(l) => keyframe_wanted.push(l),
                _ => {}
            }
        }
        self.stats.rtp_out += legs.sent;
        if video {
            if recent.len() >= RECENT_PACKETS {
                recent.pop_front();
            }
            recent.push_back(packet);
        }
        keyframe_wanted.sort_unstable();
        keyframe_wanted.dedup();
        for l in keyframe_wanted {
            self.request_keyframe(tid, l);
        }
    }

    /// Forwards `packets` of track `tid` to `viewer`'s leg of it alone, in order (a hub
    /// track's new viewer catching up: hub_source.rs).
    pub(crate) fn forward_to(&mut self, tid: TrackId, viewer: ParticipantId, packets: &[Cached]) {
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let video = track.kind == TrackKind::Video;
        let Some(down) = track.downstream.iter_mut().find(|d| d.subscriber == viewer) else {
            return;
        };
        let mut legs = Legs {
            peers: &mut self.peers,
            out: &mut self.out,
            events: &mut self.events,
            in_params: track.codec,
            video,
            vp8: false,
            sent: 0,
            now: self.now,
        };
        for c in packets {
            legs.forward(down, c);
        }
        self.stats.rtp_out += legs.sent;
    }

    /// Which track and layer an SSRC of a publisher belongs to; learnt once per SSRC.
    fn resolve_ssrc(
        &mut self,
        peer_id: PeerId,
        ssrc: str0m::rtp::Ssrc,
    ) -> Option<(TrackId, usize)> {
        let peer = self.peers.get_mut(&peer_id)?;
        if let Some(found) = peer.ssrcs.get(&ssrc) {
            return Some(*found);
        }
        let (mid, rid) = {
            let mut direct = peer.rtc.direct_api();
            let rx = direct.stream_rx(&ssrc)?;
            (rx.mid(), rx.rid())
        };
        let tid = *self.participants.get(&peer.owner)?.published.get(&mid)?;
        let track = self.tracks.get(&tid)?;
        let layer = match rid {
            Some(rid) => track.rids.iter().position(|r| *r == rid)?,
            None => 0,
        };
        peer.ssrcs.insert(ssrc, (tid, layer));
        Some((tid, layer))
    }

    /// The first packet told the codec: the room learns of the track, auto-subscribers get it.
    fn announce(&mut self, tid: TrackId) {
        let Some(info) = self.track_info(tid) else {
            return;
        };
        let owner = info.participant_id;
        let Some(room) = self.participants.get(&owner).map(|p| p.room.clone()) else {
            return;
        };
        info!(track = %tid, participant = %owner, codec = ?info.codec, "track published");
        let msg = ServerMessage::TrackPublished { track: info };
        // The publisher hears of its own track too: that is how it learns the track's id (for
        // `mute` and `unpublish`).
        self.send(owner, msg.clone());
        self.broadcast(&room, owner, &msg);
        let auto: Vec<_> =
            self.rooms
                .get(&room)
                .map(|r| r.participants.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|p| {
                    *p != owner
                        && self.participants.get(p).is_some_and(|p| {
                            p.signalling.as_ref().is_some_and(|s| s.auto_subscribe)
                        })
                })
                .collect();
        for pid in auto {
            self.add_sub(pid, tid, None);
            self.negotiate(pid);
        }
        self.tracks_changed(owner);
        self.bind_viewers(tid);
        self.announce_to_shards(owner);
    }

    fn on_subscriber_keyframe_request(&mut self, peer_id: PeerId, req: KeyframeRequest) {
        let Some(owner) = self.peers.get(&peer_id).map(|p| p.owner) else {
            return;
        };
        let Some(tid) = self
            .participants
            .get(&owner)
            .and_then(|p| p.sub_mids.get(&req.mid).copied())
        else {
            return;
        };
        let layer = self.tracks.get(&tid).and_then(|t| {
            t.downstream
                .iter()
                .find(|d| d.subscriber == owner)
                .map(|d| d.fwd.current().unwrap_or(d.fwd.target()))
        });
        if let Some(layer) = layer {
            self.request_keyframe(tid, layer);
        }
    }

    /// Asks the publisher of `tid` for a keyframe on the layer the hub's frames come from (the
    /// top one), through the throttle: hub readers that cut at keyframes (HLS) need them on a
    /// schedule that WebRTC encoders do not keep by themselves.
    pub fn request_hub_keyframe(&mut self, tid: TrackId) {
        let Some((layer, below)) = self.tracks.get(&tid).map(|t| {
            (
                t.hub_layer.unwrap_or(t.layers.len().max(1) - 1),
                t.layer_assemblers.len(),
            )
        }) else {
            return;
        };
        self.request_keyframe(tid, layer);
        // The layers fed on their own (`hub_layers`) are HLS variants: their segments end at
        // keyframes too.
        for l in 0..below {
            if l != layer {
                self.request_keyframe(tid, l);
            }
        }
        self.process_events();
    }

    /// Hands a packet to the hub's reassembly when it belongs to the layer the hub takes. That
    /// is the highest layer sending: a packet of a higher layer than the current one, or of
    /// any layer once the current one has gone quiet, moves the hub to it (a new assembler,
    /// waiting for a keyframe, which is asked for). VP9 SVC's spatial layers build on each
    /// other within one picture: all of them go in, and come out as one superframe.
    /// An audio packet for the hub, in sequence: a late or repeated one is left out (the hub's
    /// timeline only goes forward), and frames lost just before a RED packet are taken from
    /// its redundancy first, so recordings and HLS hear what RED subscribers hear.
    fn feed_hub_audio(&mut self, tid: TrackId, pkt: &RtpPacket, red_whole: Option<&Arc<[u8]>>) {
        let seq = *pkt.seq_no;
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let last = track.hub_audio_seq;
        if last.is_some_and(|l| seq <= l) {
            return;
        }
        track.hub_audio_seq = Some(seq);
        if let (Some(last), Some(whole)) = (last, red_whole)
            && seq > last + 1
            && let Ok(blocks) = crate::red::blocks(whole)
        {
            // Redundant blocks are the packets just before this one, oldest first.
            let redundant = &blocks[..blocks.len().saturating_sub(1)];
            let n = redundant.len() as u64;
            for (i, b) in redundant.iter().enumerate() {
                let Some(block_seq) = seq.checked_sub(n - i as u64) else {
                    continue;
                };
                if block_seq <= last || b.data.is_empty() {
                    continue;
                }
                let data: Arc<[u8]> = Arc::from(&whole[b.data.clone()]);
                let ts = pkt
                    .header
                    .timestamp
                    .wrapping_sub(u32::from(b.timestamp_offset));
                self.stats.red_recovered += 1;
                self.feed_hub(
                    tid,
                    0,
                    false,
                    HubPacket {
                        seq: block_seq,
                        ts,
                        marker: false,
                        payload: &data,
                    },
                );
            }
        }
        self.feed_hub(tid, 0, false, HubPacket::of(pkt));
    }

    fn feed_hub(&mut self, tid: TrackId, layer: usize, svc: bool, pkt: HubPacket<'_>) {
        if self.config.hub_layers && !svc {
            self.feed_hub_layer(tid, layer, pkt);
        }
        let now = self.now;
        let quiet_after = self.config.layer_inactive_after;
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        if track.assembler.is_none() {
            return;
        }
        let mut switched = false;
        if !svc && track.layers.len() > 1 && track.hub_layer != Some(layer) {
            let current_sending = track.hub_layer.is_some_and(|h| {
                track.layers.get(h).is_some_and(|l| {
                    l.last_seen
                        .is_some_and(|t| now.saturating_duration_since(t) < quiet_after)
                })
            });
            if track.hub_layer.is_none_or(|h| layer > h) || !current_sending {
                if track.hub_layer.is_some()
                    && let Some(params) = track.codec
                {
                    let base = self
                        .participants
                        .get(&track.owner)
                        .and_then(|p| p.media_base)
                        .unwrap_or(now);
                    // The new layer's frames start after the last one the hub got: its own
                    // timeline began with its first packet, not with the old layer's.
                    let offset = (now.saturating_duration_since(base).as_micros() as u64)
                        .max(track.hub_last_pts + 1_000);
                    let mut fresh = crate::depacketize::Assembler::new(
                        params.spec().codec,
                        params.spec().clock_rate.get(),
                        offset,
                    );
                    if let (Some(f), Some(old)) = (fresh.as_mut(), track.assembler.as_ref()) {
                        f.inherit_config(old);
                    }
                    track.assembler = fresh;
                    switched = true;
                }
                debug!(track = %tid, layer, "the hub takes this layer");
                track.hub_layer = Some(layer);
            } else {
                return; // another layer than the hub's
            }
        }
        if track.hub_layer.is_none() {
            track.hub_layer = Some(layer);
        }
        if let Some(a) = track.assembler.as_mut() {
            // A repair can complete the frames held behind it: all of them, in order.
            let mut next = a.push(pkt.seq, pkt.ts, pkt.marker, pkt.payload);
            while let Some(frame) = next {
                track.hub_last_pts = track.hub_last_pts.max(frame.pts_us);
                self.out
                    .push_back(Output::Event(crate::sfu::SfuEvent::Frame {
                        participant: track.owner,
                        track: tid,
                        layer: None,
                        frame,
                    }));
                next = a.pop();
            }
        }
        // Frames held back after a loss wait for a keyframe: ask for one (throttled).
        let lost = self
            .tracks
            .get(&tid)
            .and_then(|t| t.assembler.as_ref())
            .is_some_and(|a| a.waiting_for_keyframe());
        if switched || lost {
            self.request_keyframe(tid, layer);
        }
    }

    /// `hub_layers`: a packet of a simulcast layer below the top goes to that layer's own
    /// reassembly too (the top layer's frames are the main feed's, most of the time).
    fn feed_hub_layer(&mut self, tid: TrackId, layer: usize, pkt: HubPacket<'_>) {
        let now = self.now;
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let (Some(params), true) = (track.codec, layer + 1 < track.layers.len()) else {
            return;
        };
        let Ok(index) = u8::try_from(layer) else {
            return;
        };
        if track.layer_assemblers.len() <= layer {
            track.layer_assemblers.resize_with(layer + 1, || None);
        }
        let mut fresh = false;
        if track.layer_assemblers[layer].is_none() {
            // On the participant's media clock, as the main feed: the variants line up.
            let base = self
                .participants
                .get(&track.owner)
                .and_then(|p| p.media_base)
                .unwrap_or(now);
            track.layer_assemblers[layer] = crate::depacketize::Assembler::new(
                params.spec().codec,
                params.spec().clock_rate.get(),
                now.saturating_duration_since(base).as_micros() as u64,
            );
            fresh = true;
        }
        let Some(a) = track.layer_assemblers[layer].as_mut() else {
            return;
        };
        let mut next = a.push(pkt.seq, pkt.ts, pkt.marker, pkt.payload);
        while let Some(frame) = next {
            self.out
                .push_back(Output::Event(crate::sfu::SfuEvent::Frame {
                    participant: track.owner,
                    track: tid,
                    layer: Some(index),
                    frame,
                }));
            next = a.pop();
        }
        if fresh || a.waiting_for_keyframe() {
            self.request_keyframe(tid, layer); // throttled: at most one per interval
        }
    }

    /// Asks a track's publisher for a keyframe on one layer, through the throttle.
    pub(crate) fn request_keyframe(&mut self, tid: TrackId, layer: usize) {
        let min = self.config.keyframe_min_interval;
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let Some(l) = track.layers.get_mut(layer) else {
            return;
        };
        if l.keyframes.request(self.now, min) {
            self.send_keyframe_request(tid, layer);
        }
    }

    /// Sends the merged keyframe requests that fell due.
    pub(crate) fn poll_keyframe_requests(&mut self, now: Instant) {
        let min = self.config.keyframe_min_interval;
        let mut due = Vec::new();
        for t in self.tracks.values_mut() {
            for (i, l) in t.layers.iter_mut().enumerate() {
                if l.keyframes.poll(now, min) {
                    due.push((t.id, i));
                }
            }
        }
        for (tid, layer) in due {
            self.send_keyframe_request(tid, layer);
        }
        self.process_events();
    }

    fn send_keyframe_request(&mut self, tid: TrackId, layer: usize) {
        if self.mirror_keyframe_request(tid, layer) {
            return;
        }
        let Some(track) = self.tracks.get(&tid) else {
            return;
        };
        let (peer_id, mid): (PeerId, Mid) = (track.peer, track.mid);
        let rid = track.rids.get(layer).copied();
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        match peer.rtc.direct_api().stream_rx_by_mid(mid, rid) {
            Some(rx) => rx.request_keyframe(KeyframeRequestKind::Pli),
            None => return, // nothing received on that layer yet
        }
        self.stats.keyframe_requests += 1;
        debug!(track = %tid, layer, "keyframe request (PLI)");
        self.drain(peer_id);
    }

    /// Relays a data channel message to everyone else in the room on the channel of the same
    /// label, stamped with the sender's identity.
    fn relay_data(
        &mut self,
        from: crate::ids::ParticipantId,
        channel: str0m::channel::ChannelId,
        data: &[u8],
    ) {
        let Some(p) = self.participants.get(&from) else {
            return;
        };
        let Some(label) = p.channels.get(&channel).cloned() else {
            return;
        };
        if !p.grant.may_send_data() {
            let msg = format!(
                "a message on '{label}' was not relayed: the access token does not grant data"
            );
            self.send(from, ServerMessage::error(ErrorCode::Forbidden, msg));
            return;
        }
        if data.len() > self.config.max_data_bytes {
            let msg = format!(
                "a {} byte message on '{label}' was not relayed: the limit is {} bytes",
                data.len(),
                self.config.max_data_bytes
            );
            self.send(from, ServerMessage::error(ErrorCode::DataTooLarge, msg));
            return;
        }
        let envelope = serde_json::json!({
            "from": from,
            "name": p.name,
            "data": String::from_utf8_lossy(data),
        })
        .to_string();
        let room = p.room.clone();
        let others: Vec<_> = self
            .rooms
            .get(&room)
            .map(|r| r.participants.clone())
            .unwrap_or_default();
        for pid in others.into_iter().filter(|p| *p != from) {
            let Some(p) = self.participants.get(&pid) else {
                continue;
            };
            let Some(cid) = p
                .channels
                .iter()
                .find(|(_, l)| **l == label)
                .map(|(id, _)| *id)
            else {
                continue;
            };
            let peer_id = p.publisher;
            let Some(peer) = self.peers.get_mut(&peer_id) else {
                continue;
            };
            if let Some(mut ch) = peer.rtc.channel(cid)
                && ch.write(false, envelope.as_bytes()).unwrap_or(false)
            {
                self.stats.data_relayed += 1;
            }
            self.drain(peer_id);
        }
    }
}

impl Sfu {
    /// ICE state changes: a connection that never connected is a failure, logged with every
    /// candidate pair that could have been tried (ours × the client's) and counted.
    fn on_ice_state(&mut self, peer_id: PeerId, s: IceConnectionState) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        match s {
            IceConnectionState::Connected | IceConnectionState::Completed => {
                peer.connected_once = true;
            }
            IceConnectionState::Disconnected if peer.connected_once => {
                self.stats.ice_disconnects += 1;
                info!(participant = %peer.owner, pc = ?peer.kind, "ICE disconnected: the path that worked stopped");
            }
            IceConnectionState::Disconnected => {
                self.stats.ice_failures += 1;
                let local: Vec<String> = self
                    .local_candidates
                    .iter()
                    .map(|c| format!("{} {} {:?}", c.proto(), c.addr(), c.kind()))
                    .collect();
                let remote = if peer.remote_candidates.is_empty() {
                    "none (no candidates in the SDP and none trickled)".to_owned()
                } else {
                    peer.remote_candidates.join(", ")
                };
                warn!(
                    participant = %peer.owner,
                    pc = ?peer.kind,
                    "ICE failed: no candidate pair answered; ours [{}] × the client's [{remote}]",
                    local.join(", ")
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::order_rids;
    use str0m::media::Rid;

    #[test]
    fn known_rid_names_are_ordered_lowest_first() {
        let r = |v: &[&str]| v.iter().map(|s| Rid::from(*s)).collect::<Vec<_>>();
        assert_eq!(order_rids(r(&["f", "h", "q"])), r(&["q", "h", "f"]));
        assert_eq!(
            order_rids(r(&["high", "low", "mid"])),
            r(&["low", "mid", "high"])
        );
        assert_eq!(
            order_rids(r(&["b", "a"])),
            r(&["b", "a"]),
            "unknown names keep their order"
        );
    }
}
