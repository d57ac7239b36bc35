//! WebRTC tracks as frames: the RTP of a published track reassembled into access units, so the
//! stream hub can hand a WHIP publisher's or a room member's media to readers that are not
//! WebRTC (HLS, WebSocket players, recording, and WHEP viewers fed from the hub).
//!
//! This runs beside forwarding, not in its way: forwarding never waits for a frame to complete.
//! Frames come out in order. A packet missing on the way in is waited for, with the frames
//! after it held back, for as long as [`HOLD`] of media time: NACK/RTX repairs it within a round
//! trip or two. Only when it has not come by then is it given up, and video waits for the next
//! keyframe, like a decoder would. (Giving up as soon as the next frame began, as this did
//! first, turned every packet lost on a publisher's uplink into a keyframe request: at 10 %
//! loss Chromium's camera sent more than one keyframe a second, and every subscriber froze
//! through the frames its encoder skipped after each.)
//!
//! H.264 comes out in the hub's layout: 4-byte length-prefixed NAL units, with the parameter
//! sets lifted out into an `avcC` record (sent again whenever they change). VP8 and VP9 come
//! out as whole frames (a VP9 picture of several spatial layers as one superframe), with a
//! `VPCodecConfigurationRecord` and the picture size whenever a keyframe changes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use media::vp::VpConfig;
use str0m::format::CodecExtra;
use str0m::unversioned::{Depacketizer, H264Depacketizer, Vp8Depacketizer};

/// A packet's worth of a frame, before depacketizing.
type Packets = BTreeMap<u64, (bool, Arc<[u8]>)>;

/// A reassembled frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledFrame {
    /// H.264: length-prefixed NAL units; VP8: the frame; Opus: the packet.
    pub data: Vec<u8>,
    /// A frame a decoder can start at (audio: always).
    pub keyframe: bool,
    /// Presentation time in microseconds since the track's first packet.
    pub pts_us: u64,
    /// A new codec configuration record when it appeared or changed: H.264 `avcC`, VP8/VP9
    /// `VPCodecConfigurationRecord`.
    pub config: Option<Vec<u8>>,
    /// VP8/VP9: the picture size, with `config`.
    pub size: Option<(u32, u32)>,
}

#[derive(Debug)]
enum Kind {
    H264(H264Depacketizer, ParamSets),
    /// With the configuration last announced.
    Vp8(Vp8Depacketizer, Option<VpConfig>),
    /// Our own depacketizer: str0m's is not public in RTP mode.
    Vp9(Option<VpConfig>),
    /// Our own too; with the sequence header last announced.
    Av1(Option<media::av1::Av1Config>),
    Opus,
}

#[derive(Debug, Default)]
struct ParamSets {
    sps: Vec<u8>,
    pps: Vec<u8>,
}

/// How long (media time) a missing packet is waited for before the frame it belongs to is
/// given up: a few round trips of NACK and RTX.
pub const HOLD: std::time::Duration = std::time::Duration::from_millis(500);

/// Packets held at most while one is missing, whatever their timestamps say.
const MAX_HELD: usize = 4096;

/// A packet waiting to be part of a frame.
#[derive(Debug)]
struct Held {
    ts: u32,
    marker: bool,
    payload: Arc<[u8]>,
}

/// Reassembles one track.
#[derive(Debug)]
pub struct Assembler {
    kind: Kind,
    clock: u64,
    /// Packets not yet part of a frame that went out, by extended sequence number.
    held: BTreeMap<u64, Held>,
    /// The frame being depacketized (moved out of `held` once all its packets are in).
    packets: Packets,
    /// Frames completed and not yet taken (a repair can complete several at once).
    ready: std::collections::VecDeque<AssembledFrame>,
    need_keyframe: bool,
    /// The last sequence number of the last frame out (or given up): the next frame starts
    /// right after it. `None` at the start and after a packet was given up.
    last_seq: Option<u64>,
    /// Packets were given up before the frame being completed.
    gap_before: bool,
    /// (first extended timestamp, last raw timestamp, last extended timestamp).
    time: Option<(i64, u32, i64)>,
    /// Added to every pts: how long after its publisher's first track this track began, so a
    /// publisher's tracks share one timeline (to within their first packets' arrival).
    offset_us: u64,
}

impl Assembler {
    /// An assembler for `codec`, or `None` when frames of that codec are not reassembled yet.
    /// `offset_us`: where this track's first packet falls on its publisher's timeline.
    pub fn new(codec: str0m::format::Codec, clock: u32, offset_us: u64) -> Option<Assembler> {
        use str0m::format::Codec;
        let kind = match codec {
            Codec::H264 => Kind::H264(H264Depacketizer::default(), ParamSets::default()),
            Codec::Vp8 => Kind::Vp8(Vp8Depacketizer::default(), None),
            Codec::Vp9 => Kind::Vp9(None),
            Codec::Av1 => Kind::Av1(None),
            Codec::Opus => Kind::Opus,
            _ => return None,
        };
        Some(Assembler {
            kind,
            clock: clock.max(1) as u64,
            held: BTreeMap::new(),
            packets: BTreeMap::new(),
            ready: std::collections::VecDeque::new(),
            need_keyframe: true,
            last_seq: None,
            gap_before: false,
            time: None,
            offset_us,
        })
    }

    /// Frames are being held back until a keyframe (after a loss, or before the first one):
    /// the publisher should be asked for one.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.need_keyframe && !matches!(self.kind, Kind::Opus)
    }

    /// Takes over what `previous` announced (H.264 parameter sets, VP8/VP9/AV1 configuration),
    /// so that moving the hub to another layer of the same track announces only a real change:
    /// VP8/VP9 layers differ in size alone, which needs no new record.
    pub fn inherit_config(&mut self, previous: &Assembler) {
        match (&mut self.kind, &previous.kind) {
            (Kind::H264(_, a), Kind::H264(_, b)) => {
                a.sps.clone_from(&b.sps);
                a.pps.clone_from(&b.pps);
            }
            (Kind::Vp8(_, a), Kind::Vp8(_, b)) => *a = *b,
            (Kind::Vp9(a), Kind::Vp9(b)) => *a = *b,
            (Kind::Av1(a), Kind::Av1(b)) => a.clone_from(b),
            _ => {}
        }
    }

    /// One RTP packet (extended sequence number). Returns the first frame this packet
    /// completed; a repair can complete several: take the others with [`Self::pop`].
    pub fn push(
        &mut self,
        seq: u64,
        ts: u32,
        marker: bool,
        payload: &Arc<[u8]>,
    ) -> Option<AssembledFrame> {
        if let Kind::Opus = self.kind {
            let pts_us = self.pts(ts);
            return Some(AssembledFrame {
                data: payload.to_vec(),
                keyframe: true,
                pts_us,
                config: None,
                size: None,
            });
        }
        // A repeat, or a repair of a frame that went out or was given up.
        if self.last_seq.is_some_and(|last| seq <= last) || self.held.contains_key(&seq) {
            return self.ready.pop_front();
        }
        self.held.insert(
            seq,
            Held {
                ts,
                marker,
                payload: payload.clone(),
            },
        );
        self.drain();
        self.ready.pop_front()
    }

    /// Another frame completed by the last push, if any.
    pub fn pop(&mut self) -> Option<AssembledFrame> {
        self.ready.pop_front()
    }

    /// Takes every frame that can go out now, in order, giving up on missing packets that
    /// have been waited for long enough.
    fn drain(&mut self) {
        loop {
            let Some((&first, head)) = self.held.first_key_value() else {
                return;
            };
            let ts = head.ts;
            let expected = self.last_seq.map_or(first, |last| last + 1);
            if first != expected {
                // Packets before `first` are missing: whole frames, or this one's start.
                if !self.expired(ts) {
                    return;
                }
                self.give_up(first - 1);
                continue;
            }
            // The frame starting here: packets in a row with its timestamp, up to a marker.
            let mut end = None;
            for (next, (&s, p)) in (first..).zip(self.held.range(first..)) {
                if s != next || p.ts != ts {
                    break;
                }
                if p.marker {
                    end = Some(s);
                    break;
                }
            }
            let Some(end) = end else {
                // Not all here yet (or its last packet lost).
                if !self.expired(ts) {
                    return;
                }
                let drop_to = self
                    .held
                    .range(first..)
                    .take_while(|(_, p)| p.ts == ts)
                    .map(|(s, _)| *s)
                    .last()
                    .unwrap_or(first);
                self.give_up(drop_to);
                continue;
            };
            self.packets.clear();
            while let Some(entry) = self.held.first_entry() {
                if *entry.key() > end {
                    break;
                }
                let (s, p) = entry.remove_entry();
                self.packets.insert(s, (p.marker, p.payload));
            }
            let frame = self.try_complete();
            if frame.is_none() && self.last_seq.is_none() && !self.expired(ts) {
                // Nothing has gone out yet, so nothing says where frames start: this one's
                // first packets may still be on their way (reordered). Wait for them.
                for (s, (marker, payload)) in std::mem::take(&mut self.packets) {
                    self.held.insert(
                        s,
                        Held {
                            ts,
                            marker,
                            payload,
                        },
                    );
                }
                return;
            }
            self.last_seq = Some(end);
            self.emit(ts, frame);
        }
    }

    /// Whether the frame at `ts` (or packets before it) has been waited for long enough: the
    /// newest packet is [`HOLD`] of media time past it (either way: a timestamp jump), or too
    /// many packets are held.
    fn expired(&self, ts: u32) -> bool {
        let newest = self.held.last_key_value().map_or(ts, |(_, p)| p.ts);
        let age = newest.wrapping_sub(ts) as i32;
        let hold = (HOLD.as_micros() as u64 * self.clock / 1_000_000) as i64;
        self.held.len() > MAX_HELD || i64::from(age).abs() > hold
    }

    /// Gives up every held packet up to `seq` (and what was missing among them): video waits
    /// for a keyframe.
    fn give_up(&mut self, seq: u64) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > seq {
                break;
            }
            entry.remove();
        }
        self.need_keyframe = true;
        self.gap_before = true;
        self.last_seq = Some(seq);
    }

    /// Queues the frame depacketized from `packets` when it may go out.
    fn emit(&mut self, ts: u32, frame: Option<(Vec<u8>, bool, Option<Vec<u8>>)>) {
        self.packets.clear();
        let Some((data, keyframe, config)) = frame else {
            // Not a frame a decoder could use (a start never seen, bad packets).
            self.need_keyframe = true;
            self.gap_before = true;
            return;
        };
        let pts_us = self.pts(ts);
        if self.need_keyframe && !keyframe {
            return;
        }
        self.need_keyframe = false;
        self.gap_before = false;
        let size = match (&self.kind, &config) {
            (Kind::Vp8(_, Some(c)) | Kind::Vp9(Some(c)), Some(_)) => Some((c.width, c.height)),
            (Kind::Av1(Some(c)), Some(_)) => Some((c.width, c.height)),
            _ => None,
        };
        self.ready.push_back(AssembledFrame {
            data,
            keyframe,
            pts_us,
            config,
            size,
        });
    }

    /// Microseconds since the first packet, across timestamp wraps.
    fn pts(&mut self, ts: u32) -> u64 {
        let (first, ext) = match self.time {
            None => (ts as i64, ts as i64),
            Some((first, last, ext)) => (first, ext + ts.wrapping_sub(last) as i32 as i64),
        };
        self.time = Some((first, ts, ext));
        ((ext - first).max(0) as u64).saturating_mul(1_000_000) / self.clock + self.offset_us
    }

    /// The frame, if every packet from its first to its marked last one is here.
    fn try_complete(&mut self) -> Option<(Vec<u8>, bool, Option<Vec<u8>>)> {
        let (&first, _) = self.packets.first_key_value()?;
        let (&last, &(marker, _)) = self.packets.last_key_value()?;
        if !marker || last - first + 1 != self.packets.len() as u64 {
            return None;
        }
        // The first packet held must start the frame; one that does not means the start is
        // still on its way (reordered) or lost: wait, as for the other codecs.
        let head = &self.packets.values().next()?.1;
        let starts = match self.kind {
            Kind::Vp9(_) => vp9_descriptor(head).is_some_and(|(_, begin)| begin),
            // Z: the first element continues an OBU from the packet before.
            Kind::Av1(_) => head.first().is_some_and(|a| a & 0x80 == 0),
            _ => true,
        };
        if !starts {
            return None;
        }
        if let Kind::Vp9(last) = &mut self.kind {
            let data = vp9_picture(self.packets.values().map(|(_, p)| &p[..]))?;
            let key = media::vp::vp9_keyframe(&data).ok();
            let config = announce(last, key);
            return Some((data, key.is_some(), config));
        }
        if let Kind::Av1(last) = &mut self.kind {
            let first = self.packets.values().next()?;
            // N: the first packet of a coded video sequence, a keyframe.
            let new_sequence = first.1.first().is_some_and(|a| a & 0x08 != 0);
            let data = av1_temporal_unit(self.packets.values().map(|(_, p)| &p[..]))?;
            let header = media::av1::Av1Config::from_temporal_unit(&data).ok();
            // A sequence header may ride on any temporal unit; only a key frame starts one.
            let key = new_sequence || (header.is_some() && media::av1::is_key_frame(&data));
            let config = match header {
                Some(h) if last.as_ref() != Some(&h) => {
                    let record = h.to_record();
                    *last = Some(h);
                    Some(record)
                }
                _ => None,
            };
            return Some((data, key, config));
        }
        let mut out = Vec::new();
        let mut extra = CodecExtra::None;
        let depack: &mut dyn Depacketizer = match &mut self.kind {
            Kind::H264(d, _) => d,
            Kind::Vp8(d, _) => d,
            Kind::Vp9(_) | Kind::Av1(_) | Kind::Opus => return None,
        };
        let head = self.packets.values().next()?;
        if !depack.is_partition_head(&head.1) {
            return None;
        }
        for (_, p) in self.packets.values() {
            if depack.depacketize(p, &mut out, &mut extra).is_err() {
                return None;
            }
        }
        match &mut self.kind {
            Kind::H264(_, sets) => {
                // Each slice is a NAL unit of its own packet, so a frame whose first slice is
                // missing (lost, or still on its way) looks complete from its second on: its
                // first slice must start the picture (first_mb_in_slice 0, a ue(v) of a
                // single 1 bit). Otherwise wait, as for a missing first packet.
                let first_slice = split_annex_b(&out)
                    .find(|n| matches!(n.first().map(|h| h & 0x1f), Some(1 | 5)));
                if first_slice.is_some_and(|n| n.get(1).is_none_or(|b| b & 0x80 == 0)) {
                    return None;
                }
                // A keyframe after a gap without its SPS and PPS: they may be what is missing
                // (a new resolution's parameter sets, in a packet before the slices), and the
                // slices decode as garbage with the old ones. Wait for them; if they never come
                // the frame is dropped with the others until the next keyframe.
                if self.gap_before {
                    let types: Vec<u8> = split_annex_b(&out)
                        .filter_map(|n| n.first().map(|h| h & 0x1f))
                        .collect();
                    if types.contains(&5) && !(types.contains(&7) && types.contains(&8)) {
                        return None;
                    }
                }
                Some(annex_b_to_avcc(&out, sets))
            }
            Kind::Vp8(_, last) => {
                // VP8 frame tag: bit 0 clear means a key frame (RFC 6386 §9.1).
                let key = out.first().is_some_and(|b| b & 1 == 0);
                let config = announce(last, media::vp::vp8_keyframe(&out).ok());
                Some((out, key, config))
            }
            Kind::Vp9(_) | Kind::Av1(_) | Kind::Opus => None,
        }
    }
}

/// The configuration record to send when a keyframe's configuration differs from the last one
/// announced: the first keyframe, or a new profile, bit depth or chroma format. A new picture
/// size alone is not announced: VP8 and VP9 decoders take it from the keyframe itself, and a
/// new record would make the packager start a new init segment (a discontinuity for players,
/// a new file for recordings) at every step of a browser's resolution ramp. The record keeps
/// the first keyframe's size and level.
fn announce(last: &mut Option<VpConfig>, key: Option<VpConfig>) -> Option<Vec<u8>> {
    let key = key?;
    let same_format = |a: &VpConfig| {
        (a.profile, a.bit_depth, a.chroma_subsampling, a.full_range)
            == (
                key.profile,
                key.bit_depth,
                key.chroma_subsampling,
                key.full_range,
            )
    };
    if last.as_ref().is_some_and(same_format) {
        return None;
    }
    *last = Some(key);
    Some(key.to_record())
}

/// The length of a VP9 payload descriptor (RFC 9628 §4.2) and its B bit (the packet starts a
/// layer frame); `None` when the packet is shorter than its descriptor says.
fn vp9_descriptor(p: &[u8]) -> Option<(usize, bool)> {
    let b0 = *p.first()?;
    let bit = |m: u8| b0 & m != 0;
    let (i, pred, l, flex, begin, v) = (
        bit(0x80),
        bit(0x40),
        bit(0x20),
        bit(0x10),
        bit(0x08),
        bit(0x02),
    );
    let mut idx = 1;
    if i {
        // Picture ID: 7 bits, or 15 with M set.
        idx += if *p.get(idx)? & 0x80 != 0 { 2 } else { 1 };
    }
    if l {
        idx += 1; // TID, U, SID, D
        if !flex {
            idx += 1; // TL0PICIDX
        }
    }
    if flex && pred {
        // Up to three reference indices, each with N set when another follows.
        for _ in 0..3 {
            let r = *p.get(idx)?;
            idx += 1;
            if r & 0x01 == 0 {
                break;
            }
        }
    }
    if v {
        // Scalability structure: N_S, Y, G; sizes; picture group.
        let ss = *p.get(idx)?;
        idx += 1;
        let layers = usize::from(ss >> 5) + 1;
        if ss & 0x10 != 0 {
            idx += 4 * layers;
        }
        if ss & 0x08 != 0 {
            let pictures = *p.get(idx)?;
            idx += 1;
            for _ in 0..pictures {
                let d = *p.get(idx)?;
                idx += 1 + usize::from((d >> 2) & 0x03);
            }
        }
    }
    (idx < p.len()).then_some((idx, begin))
}

/// An AV1 temporal unit from its packets in order (RTP payload format for AV1 §4.4): OBU
/// elements gathered across packets (Z: the first element continues the previous packet's
/// last; Y: the last continues in the next), then written out in the low-overhead format MP4
/// wants — every OBU with its size field, no temporal delimiters or tile lists.
fn av1_temporal_unit<'a>(packets: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut obus: Vec<Vec<u8>> = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    for p in packets {
        let aggregation = *p.first()?;
        let (z, y, w) = (
            aggregation & 0x80 != 0,
            aggregation & 0x40 != 0,
            (aggregation >> 4) & 0x03,
        );
        let mut elements: Vec<&[u8]> = Vec::new();
        let mut idx = 1;
        while idx < p.len() {
            // W: how many elements; the last of W has no length. W = 0: all have one.
            let counted = w != 0 && elements.len() + 1 == usize::from(w);
            let len = if counted {
                p.len() - idx
            } else {
                let (len, used) = media::av1::leb128(&p[idx..])?;
                idx += used;
                usize::try_from(len).ok()?
            };
            elements.push(p.get(idx..idx.checked_add(len)?)?);
            idx += len;
            if counted {
                break;
            }
        }
        let n = elements.len();
        for (i, e) in elements.into_iter().enumerate() {
            if i == 0 && z {
                open.as_mut()?.extend_from_slice(e);
            } else {
                if let Some(done) = open.take() {
                    obus.push(done);
                }
                open = Some(e.to_vec());
            }
            if !(i + 1 == n && y)
                && let Some(done) = open.take()
            {
                obus.push(done);
            }
        }
    }
    if let Some(done) = open.take() {
        obus.push(done); // a Y on the last packet: keep what there is
    }
    let mut out = Vec::with_capacity(obus.iter().map(|o| o.len() + 4).sum());
    for obu in &obus {
        let h = *obu.first()?;
        let kind = (h >> 3) & 0x0f;
        if kind == media::av1::OBU_TEMPORAL_DELIMITER || kind == media::av1::OBU_TILE_LIST {
            continue;
        }
        let header = if h & 0x04 != 0 { 2 } else { 1 };
        if obu.len() < header {
            return None;
        }
        if h & 0x02 != 0 {
            out.extend_from_slice(obu); // it carries its size already
        } else {
            out.push(h | 0x02);
            out.extend_from_slice(&obu[1..header]);
            media::av1::write_leb128((obu.len() - header) as u64, &mut out);
            out.extend_from_slice(&obu[header..]);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A VP9 picture from its packets in order: each layer frame's payloads joined, and several
/// layer frames (spatial layers) packed as one superframe (VP9 spec Annex B) so that an MP4
/// sample or a decoder gets the picture in one piece.
fn vp9_picture<'a>(packets: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for p in packets {
        let (len, begin) = vp9_descriptor(p)?;
        if begin || frames.is_empty() {
            frames.push(Vec::with_capacity(p.len()));
        }
        frames.last_mut()?.extend_from_slice(&p[len..]);
    }
    if frames.len() <= 1 {
        return frames.pop();
    }
    if frames.len() > 8 {
        return None;
    }
    let largest = frames.iter().map(Vec::len).max().unwrap_or(0);
    let bytes = (1..=4usize).find(|b| largest < 1 << (8 * b))?;
    let marker = 0xc0 | ((bytes as u8 - 1) << 3) | (frames.len() as u8 - 1);
    let mut out: Vec<u8> = Vec::with_capacity(frames.iter().map(Vec::len).sum::<usize>() + 34);
    for f in &frames {
        out.extend_from_slice(f);
    }
    out.push(marker);
    for f in &frames {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes()[..bytes]);
    }
    out.push(marker);
    Some(out)
}

/// Splits Annex B into NAL units, keeps SPS/PPS aside (returning a new `avcC` when they
/// change), drops access unit delimiters, and prefixes the rest with 4-byte lengths.
fn annex_b_to_avcc(data: &[u8], sets: &mut ParamSets) -> (Vec<u8>, bool, Option<Vec<u8>>) {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut key = false;
    let mut changed = false;
    for nal in split_annex_b(data) {
        let Some(&h) = nal.first() else { continue };
        match h & 0x1f {
            7 => {
                changed |= sets.sps != nal;
                sets.sps = nal.to_vec();
            }
            8 => {
                changed |= sets.pps != nal;
                sets.pps = nal.to_vec();
            }
            9 => {}
            t => {
                key |= t == 5;
                out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                out.extend_from_slice(nal);
            }
        }
    }
    let config = changed
        .then(|| media::avc::AvcConfig::from_parameter_sets(&sets.sps, &sets.pps))
        .flatten()
        .map(|c| c.to_bytes());
    (out, key, config)
}

/// NAL units between 3- or 4-byte start codes.
fn split_annex_b(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            let e = s - 3;
            // A 4-byte start code's leading zero belongs to the start code.
            if e > 0 && data[e - 1] == 0 { e - 1 } else { e }
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::format::Codec;

    fn arc(v: &[u8]) -> Arc<[u8]> {
        Arc::from(v)
    }

    /// A STAP-A packet holding an SPS (ending in `sps_last`) and a PPS.
    fn stap(sps_last: u8) -> Arc<[u8]> {
        let sps = [0x67, 0x42, 0xe0, 0x1f, sps_last];
        let pps = [0x68, 0xce, 0x3c];
        let mut v = vec![0x78];
        for n in [&sps[..], &pps[..]] {
            v.extend_from_slice(&(n.len() as u16).to_be_bytes());
            v.extend_from_slice(n);
        }
        arc(&v)
    }

    #[test]
    fn a_late_repair_lets_the_frames_behind_it_out_in_order() {
        let mut a = Assembler::new(Codec::H264, 90_000, 0).unwrap();
        assert_eq!(a.push(1, 0, false, &stap(0xaa)), None);
        assert!(a.push(2, 0, true, &arc(&[0x65, 0x81])).is_some());
        // Packets 3 and 4 are late; 5 is the slice of a keyframe whose new parameter sets are
        // packet 4. It waits for them, and asks for no keyframe meanwhile.
        assert_eq!(a.push(5, 3000, true, &arc(&[0x65, 0x82])), None);
        assert!(!a.waiting_for_keyframe());
        let f = a
            .push(3, 1500, true, &arc(&[0x41, 0x83]))
            .expect("the repaired frame");
        assert!(!f.keyframe);
        assert_eq!(f.pts_us, 16_666);
        let f = a
            .push(4, 3000, false, &arc(&stap(0xbb)))
            .expect("complete with its sets");
        assert!(f.keyframe);
        let c = media::avc::AvcConfig::parse(&f.config.expect("new sets")).unwrap();
        assert_eq!(c.sps[0][4], 0xbb);
        assert_eq!(a.pop(), None);
    }

    #[test]
    fn a_frame_without_its_first_slice_waits_for_it() {
        let mut a = Assembler::new(Codec::H264, 90_000, 0).unwrap();
        let stap = stap(0xaa);
        // A keyframe in three packets: parameter sets, slice 1 (first_mb 0: a 1 bit), slice 2
        // (first_mb 40: not). The first slice comes last.
        assert_eq!(a.push(1, 0, false, &stap), None);
        assert_eq!(a.push(3, 0, true, &arc(&[0x65, 0x40, 2])), None);
        let f = a
            .push(2, 0, false, &arc(&[0x65, 0x88, 1]))
            .expect("whole once slice 1 is in");
        assert!(f.keyframe);
        assert_eq!(
            f.data,
            vec![0, 0, 0, 3, 0x65, 0x88, 1, 0, 0, 0, 3, 0x65, 0x40, 2]
        );
        // A delta frame whose first slice never comes is not handed over.
        assert_eq!(a.push(5, 3000, true, &arc(&[0x41, 0x40, 3])), None);
        assert_eq!(
            a.push(6, 6000, true, &arc(&[0x41, 0x88, 4])),
            None,
            "held until a keyframe"
        );
    }

    #[test]
    fn a_frame_lost_whole_holds_the_frames_after_it_then_waits_for_a_keyframe() {
        let mut a = Assembler::new(Codec::H264, 90_000, 0).unwrap();
        let stap = stap(0xaa);
        // The hold in RTP ticks at 90 kHz.
        let hold = (HOLD.as_micros() * 9 / 100) as u32;
        assert_eq!(a.push(1, 0, false, &stap), None);
        assert!(a.push(2, 0, true, &arc(&[0x65, 0x81])).unwrap().keyframe);
        assert!(a.push(3, 3000, true, &arc(&[0x41, 0x82])).is_some());
        // Packet 4, the whole of the frame at 6000, is missing: the frames after it refer to
        // it, so they wait for it, for the hold.
        assert_eq!(a.push(5, 9000, true, &arc(&[0x41, 0x83])), None);
        assert_eq!(a.push(6, 12000, true, &arc(&[0x41, 0x84])), None);
        assert!(!a.waiting_for_keyframe(), "a repair may still come");
        // A hold later it is given up; the frames after it are dropped until a keyframe.
        let late = 9000 + hold + 3000;
        assert_eq!(a.push(7, late, true, &arc(&[0x41, 0x85])), None);
        assert!(a.waiting_for_keyframe());
        assert_eq!(a.push(4, 6000, true, &arc(&[0x41, 0x86])), None, "too late");
        assert_eq!(a.push(8, late + 3000, false, &stap), None);
        assert!(
            a.push(9, late + 3000, true, &arc(&[0x65, 0x87]))
                .unwrap()
                .keyframe
        );
        assert!(a.push(10, late + 6000, true, &arc(&[0x41, 0x88])).is_some());
    }

    #[test]
    fn h264_single_nal_frames_become_avcc_with_parameter_sets_lifted_out() {
        let mut a = Assembler::new(Codec::H264, 90_000, 0).unwrap();
        // A STAP-A with SPS and PPS, then the IDR as a single NAL unit (marker).
        let sps = [0x67, 0x42, 0xe0, 0x1f, 0xaa];
        let pps = [0x68, 0xce, 0x3c];
        let mut stap = vec![0x78];
        for n in [&sps[..], &pps[..]] {
            stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
            stap.extend_from_slice(n);
        }
        assert_eq!(a.push(10, 3000, false, &arc(&stap)), None);
        let f = a.push(11, 3000, true, &arc(&[0x65, 0x81, 2, 3])).unwrap();
        assert!(f.keyframe);
        assert_eq!(f.data, vec![0, 0, 0, 4, 0x65, 0x81, 2, 3]);
        let c = media::avc::AvcConfig::parse(&f.config.unwrap()).unwrap();
        assert_eq!((c.profile, c.level, c.nal_length_size), (0x42, 0x1f, 4));
        assert_eq!((c.sps, c.pps), (vec![sps.to_vec()], vec![pps.to_vec()]));
        assert_eq!(f.pts_us, 0);
        // A delta frame 1/30 s later: no config, not key.
        let f = a.push(12, 6000, true, &arc(&[0x41, 0x89])).unwrap();
        assert!(!f.keyframe);
        assert_eq!(f.config, None);
        assert_eq!(f.pts_us, 33_333);
    }

    #[test]
    fn a_frame_with_a_hole_waits_for_its_repair_with_the_frames_behind_it() {
        let mut a = Assembler::new(Codec::H264, 90_000, 0).unwrap();
        assert!(a.push(1, 0, true, &arc(&[0x65, 0x81])).is_some());
        // FU-A start and end of frame 2, the middle packet late.
        assert_eq!(a.push(2, 3000, false, &arc(&[0x7c, 0x81, 0x88])), None);
        assert_eq!(a.push(4, 3000, true, &arc(&[0x7c, 0x41, 3])), None);
        assert_eq!(a.push(5, 6000, true, &arc(&[0x41, 0x81])), None);
        // The repair completes frame 2, and frame 3 goes out behind it.
        let f = a.push(3, 3000, false, &arc(&[0x7c, 0x01, 2])).unwrap();
        assert_eq!((f.pts_us, f.data.len()), (33_333, 4 + 4));
        assert_eq!(a.pop().map(|f| f.pts_us), Some(66_666));
        assert_eq!(a.pop(), None);
        assert!(!a.waiting_for_keyframe());
    }

    #[test]
    fn a_hole_never_repaired_is_given_up_after_the_hold() {
        let mut a = Assembler::new(Codec::H264, 90_000, 0).unwrap();
        let hold = (HOLD.as_micros() * 9 / 100) as u32;
        assert!(a.push(1, 0, true, &arc(&[0x65, 0x81])).is_some());
        assert_eq!(a.push(2, 3000, false, &arc(&[0x7c, 0x81, 1])), None);
        assert_eq!(a.push(4, 3000, true, &arc(&[0x7c, 0x41, 3])), None);
        // Delta frames for a hold: held, then given up with the broken frame.
        for (i, seq) in (5..20).enumerate() {
            let ts = 6000 + i as u32 * (hold / 10);
            assert_eq!(a.push(seq, ts, true, &arc(&[0x41, 0x81])), None);
        }
        assert!(a.waiting_for_keyframe());
        // After a gap a keyframe needs its parameter sets with it (they may be what was lost).
        let ts = 6000 + 16 * (hold / 10);
        assert_eq!(a.push(20, ts, true, &arc(&[0x65, 0x82])), None);
        assert_eq!(a.push(21, ts + 3000, false, &stap(0xaa)), None);
        assert!(
            a.push(22, ts + 3000, true, &arc(&[0x65, 0x83]))
                .is_some_and(|f| f.keyframe)
        );
    }

    #[test]
    fn out_of_order_packets_complete_a_frame_and_repeats_are_ignored() {
        let mut a = Assembler::new(Codec::H264, 90_000, 0).unwrap();
        assert_eq!(a.push(3, 0, true, &arc(&[0x7c, 0x45, 3])), None);
        assert_eq!(a.push(1, 0, false, &arc(&[0x7c, 0x85, 0x81])), None);
        let f = a.push(2, 0, false, &arc(&[0x7c, 0x05, 2])).unwrap();
        assert_eq!(f.data, vec![0, 0, 0, 4, 0x65, 0x81, 2, 3]);
        assert_eq!(a.push(2, 0, false, &arc(&[0x7c, 0x05, 2])), None);
    }

    #[test]
    fn opus_packets_are_frames_and_time_survives_the_wrap() {
        // This track began 5 ms after its publisher's first one.
        let mut a = Assembler::new(Codec::Opus, 48_000, 5_000).unwrap();
        let f = a.push(1, u32::MAX - 479, false, &arc(&[1, 2])).unwrap();
        assert_eq!((f.pts_us, f.keyframe), (5_000, true));
        let f = a.push(2, 480, false, &arc(&[3])).unwrap();
        assert_eq!(f.pts_us, 25_000);
    }

    #[test]
    fn vp8_keyframes_are_recognised() {
        let mut a = Assembler::new(Codec::Vp8, 90_000, 0).unwrap();
        // Descriptor: S=1, PID 0, no extension; then a key frame tag (bit 0 clear).
        let f = a.push(1, 0, true, &arc(&[0x10, 0x50, 0x01, 0x00])).unwrap();
        assert!(f.keyframe);
        assert_eq!(f.data, vec![0x50, 0x01, 0x00]);
        assert!(Assembler::new(Codec::G722, 8_000, 0).is_none());
    }

    /// A VP8 keyframe: frame tag, start code, 640×360.
    const VP8_KEY: [u8; 10] = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];

    #[test]
    fn a_vp8_keyframe_announces_its_configuration_once() {
        let mut a = Assembler::new(Codec::Vp8, 90_000, 0).unwrap();
        let mut p = vec![0x10];
        p.extend_from_slice(&VP8_KEY);
        let f = a.push(1, 0, true, &arc(&p)).unwrap();
        assert!(f.keyframe);
        assert_eq!(f.size, Some((640, 360)));
        let c = media::vp::VpConfig::parse_record(f.config.as_deref().unwrap()).unwrap();
        assert_eq!((c.profile, c.bit_depth), (0, 8));
        // The same configuration again: nothing new to announce.
        let f = a.push(2, 3000, true, &arc(&p)).unwrap();
        assert_eq!((f.config, f.size), (None, None));
        // A new picture size alone (a browser's resolution ramp) is not announced either: the
        // decoder reads it from the keyframe, and a new record would start a new init segment.
        let mut bigger = p.clone();
        bigger[7..11].copy_from_slice(&[0x00, 0x05, 0xd0, 0x02]); // 1280×720
        let f = a.push(3, 6000, true, &arc(&bigger)).unwrap();
        assert!(f.keyframe);
        assert_eq!((f.config, f.size), (None, None));
        // A new assembler for another simulcast layer of the track, taking over what was
        // announced: its keyframes announce nothing new either.
        let mut b = Assembler::new(Codec::Vp8, 90_000, 0).unwrap();
        b.inherit_config(&a);
        let f = b.push(100, 9000, true, &arc(&bigger)).unwrap();
        assert_eq!((f.keyframe, f.config), (true, None));
    }

    /// A VP9 profile-0 keyframe header for 1280×720 (see media::vp's tests), then filler.
    fn vp9_key() -> Vec<u8> {
        // 10 0 0 0 0 1 0 | sync 0x498342 | cs 010, range 0 | 1279 | 719
        let mut bits = String::from("10000010");
        bits += "010010011000001101000010";
        bits += "0100";
        bits += &format!("{:016b}{:016b}", 1279, 719);
        bits += "0000";
        let mut out: Vec<u8> = (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect();
        out.extend_from_slice(&[0xaa; 20]);
        out
    }

    #[test]
    fn vp9_pictures_are_reassembled_and_announced() {
        let key = vp9_key();
        assert!(media::vp::vp9_is_keyframe(&key));
        let mut a = Assembler::new(Codec::Vp9, 90_000, 0).unwrap();
        // Two packets: I (15-bit picture id), B on the first, E on the second; a scalability
        // structure with one 1280×720 layer rides on the first (V).
        let mut p1 = vec![0x80 | 0x08 | 0x02, 0x80, 0x01, 0x10, 0x05, 0x00, 0x02, 0xd0];
        p1.extend_from_slice(&key[..12]);
        let mut p2 = vec![0x80 | 0x04, 0x80, 0x01];
        p2.extend_from_slice(&key[12..]);
        assert!(a.push(10, 0, false, &arc(&p1)).is_none());
        let f = a.push(11, 0, true, &arc(&p2)).unwrap();
        assert!(f.keyframe);
        assert_eq!(f.data, key);
        assert_eq!(f.size, Some((1280, 720)));
        assert!(f.config.is_some());
        // An inter picture: P set, one packet.
        let f = a
            .push(
                12,
                3000,
                true,
                &arc(&[0x40 | 0x08 | 0x04, 0x81, 0x11, 0x22]),
            )
            .unwrap();
        assert!(!f.keyframe);
        assert_eq!(f.data, vec![0x81, 0x11, 0x22]);
    }

    #[test]
    fn a_vp9_or_av1_frame_whose_first_packet_is_late_waits_for_it() {
        let key = vp9_key();
        let mut a = Assembler::new(Codec::Vp9, 90_000, 0).unwrap();
        let mut p1 = vec![0x08]; // B
        p1.extend_from_slice(&key[..10]);
        let mut p2 = vec![0x04]; // E
        p2.extend_from_slice(&key[10..]);
        // The end arrives first: no frame, nothing given up.
        assert!(a.push(2, 0, true, &arc(&p2)).is_none());
        let f = a
            .push(1, 0, false, &arc(&p1))
            .expect("complete once the start is in");
        assert!(f.keyframe);
        assert_eq!(f.data, key);
        // AV1: a continuation (Z) first waits too.
        let mut b = Assembler::new(Codec::Av1, 90_000, 0).unwrap();
        assert!(b.push(2, 0, true, &arc(&[0x80 | 0x10, 4, 5, 6])).is_none());
        let f = b
            .push(1, 0, false, &arc(&[0x40 | 0x10 | 0x08, 0x30, 1, 2, 3]))
            .expect("complete once the start is in");
        assert_eq!(f.data, vec![0x32, 6, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn vp9_spatial_layers_become_one_superframe() {
        let key = vp9_key();
        let mut a = Assembler::new(Codec::Vp9, 90_000, 0).unwrap();
        // L set (flexible mode off: layer byte and TL0PICIDX): layer 0 then layer 1, each
        // one packet with B and E; the marker ends the picture.
        let mut l0 = vec![0x20 | 0x08 | 0x04, 0x00, 0x00];
        l0.extend_from_slice(&key);
        let l1 = vec![0x20 | 0x08 | 0x04 | 0x40, 0x02, 0x00, 0x83, 0x44];
        assert!(a.push(1, 0, false, &arc(&l0)).is_none());
        let f = a.push(2, 0, true, &arc(&l1)).unwrap();
        assert!(f.keyframe);
        let n = key.len();
        assert_eq!(&f.data[..n], &key[..]);
        assert_eq!(&f.data[n..n + 2], &[0x83, 0x44]);
        // Superframe index: marker (1-byte sizes, 2 frames), the sizes, marker again.
        assert_eq!(&f.data[n + 2..], &[0xc1, n as u8, 2, 0xc1]);
    }

    #[test]
    fn av1_obus_are_gathered_across_packets_and_given_sizes() {
        let mut a = Assembler::new(Codec::Av1, 90_000, 0).unwrap();
        // A temporal delimiter (dropped), then a frame OBU (type 6, no size field) split in
        // two: packet 1 has W=2 (the second element unsized), Y (it goes on), N (keyframe).
        let td = [0x12u8];
        let frame = [0x30u8, 1, 2, 3, 4, 5, 6];
        let mut p1 = vec![0x40 | 0x20 | 0x08, td.len() as u8];
        p1.extend_from_slice(&td);
        p1.extend_from_slice(&frame[..4]);
        // Packet 2: Z (continues), W=1.
        let mut p2 = vec![0x80 | 0x10];
        p2.extend_from_slice(&frame[4..]);
        assert!(a.push(1, 0, false, &arc(&p1)).is_none());
        let f = a.push(2, 0, true, &arc(&p2)).unwrap();
        assert!(f.keyframe, "N marks a keyframe");
        assert_eq!(f.data, vec![0x32, 6, 1, 2, 3, 4, 5, 6]);
        // W=0: every element has a length; an element longer than the packet drops it.
        let mut b = Assembler::new(Codec::Av1, 90_000, 0).unwrap();
        assert!(b.push(1, 0, true, &arc(&[0x08, 9, 0x30, 1])).is_none());
        // A continuation with nothing before it is not a frame either.
        assert_eq!(av1_temporal_unit([&[0x80u8, 1][..]].into_iter()), None);
    }

    #[test]
    fn a_vp9_packet_shorter_than_its_descriptor_is_dropped() {
        let mut a = Assembler::new(Codec::Vp9, 90_000, 0).unwrap();
        // I and M set, but the picture id's second byte is missing.
        assert!(a.push(1, 0, true, &arc(&[0x88 | 0x04, 0x80])).is_none());
        assert_eq!(vp9_descriptor(&[]), None);
        // V with a picture group claiming more than the packet holds.
        assert_eq!(vp9_descriptor(&[0x0a, 0x08, 0x05, 0x0c]), None);
    }

    #[test]
    fn vp9_and_av1_garbage_is_not_a_panic() {
        // A fixed pseudo-random sequence: packets of any length and content, any markers.
        let mut x: u32 = 0x9e37_79b9;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for codec in [Codec::Vp9, Codec::Av1] {
            let mut a = Assembler::new(codec, 90_000, 0).unwrap();
            for i in 0..20_000u64 {
                let len = (next() % 40) as usize;
                let p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let marker = next() % 3 == 0;
                if let Some(f) = a.push(i, (i / 4) as u32 * 3000, marker, &arc(&p)) {
                    assert!(f.data.len() < 4 * 40 * 4 + 64, "{}", f.data.len());
                }
            }
        }
    }

    #[test]
    fn garbage_is_not_a_panic() {
        let mut a = Assembler::new(Codec::H264, 90_000, 0).unwrap();
        for i in 0..200u64 {
            let p: Vec<u8> = (0..(i % 7)).map(|j| (i * 31 + j * 7) as u8).collect();
            let _ = a.push(i, (i / 3) as u32 * 3000, i % 3 == 2, &arc(&p));
        }
        assert_eq!(split_annex_b(&[0, 0, 1]).count(), 0);
        assert_eq!(
            split_annex_b(&[0, 0, 0, 1, 9, 0, 0, 1, 5, 5]).collect::<Vec<_>>(),
            vec![&[9][..], &[5, 5][..]]
        );
    }
}
