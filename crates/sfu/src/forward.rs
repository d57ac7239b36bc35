//! One published track as one subscriber receives it: which layer is sent, and the rewriting that
//! makes the subscriber see one continuous RTP stream.
//!
//! A subscriber's m-line has one SSRC whatever the publisher does: layers switch (simulcast), the
//! publisher's SSRC changes (it restarted its encoder or reconnected). Each such change starts a
//! new *epoch*: from the first packet of the epoch, sequence numbers continue one past the last one
//! sent and timestamps continue by the wall-clock time elapsed, so the subscriber's jitter buffer
//! and NACK logic never see a jump. Video epochs start only at a keyframe; packets before one are
//! dropped and the caller asks the publisher for a keyframe.

use std::time::Instant;

use std::collections::VecDeque;

use str0m::rtp::Ssrc;

use crate::codec::Vp9Desc;

/// What to do with one incoming packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it with these (extended) sequence number and RTP timestamp.
    Forward {
        /// Rewritten extended sequence number.
        seq: u64,
        /// Rewritten RTP timestamp.
        time: u32,
    },
    /// Not for this subscriber (another layer, or before the epoch's start).
    Drop,
    /// Dropped, and the subscriber is waiting for a keyframe on this layer.
    WaitKeyframe(usize),
}

/// Per-subscriber forwarding state for one track.
#[derive(Debug)]
pub struct Forwarder {
    /// Audio needs no keyframe to start.
    needs_keyframe: bool,
    clock_rate: u32,
    /// The layer being sent and the SSRC it came from, once an epoch has started.
    current: Option<(usize, Ssrc)>,
    /// The layer wanted. Differs from `current` while waiting for its keyframe.
    target: usize,
    /// First incoming sequence number of the current epoch; older packets (late retransmissions
    /// from before the switch) would collide with what was already sent.
    epoch_first_in: u64,
    seq_offset: u64,
    time_offset: u32,
    /// Highest sequence number and the timestamp sent, and when.
    last_out: Option<(u64, u32, Instant)>,
    /// Count of epochs started (layer switches and SSRC changes), for stats and tests.
    pub switches: u64,
    /// Spatial layer selection inside one SVC stream.
    svc: Svc,
    /// Sending nothing (the subscriber's link carries no video layer); a keyframe starts it
    /// again.
    paused: bool,
}

/// Spatial layers of a VP9 SVC stream, thinned per subscriber. Unlike simulcast, everything
/// arrives on one SSRC: dropping the upper layers' packets leaves holes in the sequence numbers
/// that the rewriting must close, also for packets that arrive late (repaired by NACK).
#[derive(Debug, Default)]
struct Svc {
    /// Highest spatial layer forwarded.
    current: u8,
    /// Highest spatial layer wanted.
    target: u8,
    /// Highest incoming sequence number seen in this epoch.
    highest_in: Option<u64>,
    /// Recent in-order decisions: incoming sequence number → outgoing one, `None` if dropped.
    /// Packets missing when a later one arrived are given their number in advance.
    recent: VecDeque<(u64, Option<u64>)>,
}

/// Decisions kept for packets arriving late: about a second of a three-layer stream.
const SVC_HISTORY: usize = 512;

impl Forwarder {
    /// A forwarder for a video (`needs_keyframe`) or audio track with the given RTP clock rate.
    pub fn new(needs_keyframe: bool, clock_rate: u32, target: usize) -> Self {
        Forwarder {
            needs_keyframe,
            clock_rate,
            current: None,
            target,
            epoch_first_in: 0,
            seq_offset: 0,
            time_offset: 0,
            last_out: None,
            switches: 0,
            svc: Svc::default(),
            paused: false,
        }
    }

    /// Stops forwarding. The numbering carries on from the last packet sent when it resumes.
    pub fn pause(&mut self) {
        self.paused = true;
        self.current = None;
    }

    /// Forwards again, from the next keyframe. Returns true when it was paused (a keyframe is
    /// wanted).
    pub fn resume(&mut self) -> bool {
        std::mem::replace(&mut self.paused, false)
    }

    /// Stops forwarding a layer above `layer` at once instead of until the lower layer's
    /// keyframe (what [`Self::on_packet`] does on an ordinary switch): for a link that is
    /// already full, another few hundred milliseconds of the higher layer cost more than a
    /// short freeze. Nothing is sent until the next keyframe of the target layer.
    pub fn drop_layers_above(&mut self, layer: usize) {
        if self.current().is_some_and(|c| c > layer) {
            self.current = None;
        }
    }

    /// Paused by [`Self::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Continues the numbering of an earlier forwarder on the same m-line (a reused m-line must
    /// not jump backwards in sequence numbers on its SSRC).
    pub fn continuing(mut self, last_out: Option<(u64, u32, Instant)>) -> Self {
        self.last_out = last_out;
        self
    }

    /// The last sequence number and timestamp sent, and when.
    pub fn last_out(&self) -> Option<(u64, u32, Instant)> {
        self.last_out
    }

    /// The layer wanted.
    pub fn target(&self) -> usize {
        self.target
    }

    /// The layer being sent, if any.
    pub fn current(&self) -> Option<usize> {
        self.current.map(|(l, _)| l)
    }

    /// Asks for another layer. Returns true when that means waiting for a keyframe on it.
    pub fn set_target(&mut self, layer: usize) -> bool {
        if layer == self.target {
            return false;
        }
        self.target = layer;
        self.needs_keyframe && self.current() != Some(layer)
    }

    /// Decides about one incoming packet of `layer`.
    pub fn on_packet(
        &mut self,
        layer: usize,
        ssrc: Ssrc,
        seq: u64,
        time: u32,
        arrival: Instant,
        keyframe_start: bool,
    ) -> Verdict {
        if self.paused {
            return Verdict::Drop;
        }
        let continuing = self.current == Some((layer, ssrc));
        if continuing && layer == self.target {
            return self.rewrite(seq, time, arrival);
        }
        if continuing && self.current() != Some(self.target) {
            // Keep sending the old layer until the new one has a keyframe: a frozen picture
            // is worse than a lower (or higher) resolution for a moment.
            return self.rewrite(seq, time, arrival);
        }
        if layer != self.target {
            return Verdict::Drop;
        }
        // The target layer, but a new epoch: a switch, a first packet, or a new SSRC.
        if self.needs_keyframe && !keyframe_start {
            return Verdict::WaitKeyframe(layer);
        }
        self.start_epoch(layer, ssrc, seq, time, arrival);
        self.rewrite(seq, time, arrival)
    }

    fn start_epoch(&mut self, layer: usize, ssrc: Ssrc, seq: u64, time: u32, arrival: Instant) {
        match self.last_out {
            None => {
                // Start below 2^16 so the subscriber needs no out-of-band rollover counter.
                self.seq_offset = (seq & 0xffff).wrapping_sub(seq);
                self.time_offset = 0;
            }
            Some((last_seq, last_time, last_at)) => {
                self.seq_offset = (last_seq + 1).wrapping_sub(seq);
                let elapsed = arrival.saturating_duration_since(last_at);
                let ticks = (elapsed.as_micros() as u64 * self.clock_rate as u64 / 1_000_000)
                    .clamp(1, u32::MAX as u64) as u32;
                self.time_offset = last_time.wrapping_add(ticks).wrapping_sub(time);
            }
        }
        self.epoch_first_in = seq;
        self.current = Some((layer, ssrc));
        self.switches += 1;
    }

    fn rewrite(&mut self, seq: u64, time: u32, arrival: Instant) -> Verdict {
        if seq < self.epoch_first_in {
            return Verdict::Drop;
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_time = time.wrapping_add(self.time_offset);
        match self.last_out {
            Some((last, _, _)) if out_seq <= last => {} // a late or repaired packet
            _ => self.last_out = Some((out_seq, out_time, arrival)),
        }
        Verdict::Forward {
            seq: out_seq,
            time: out_time,
        }
    }
}

/// What to do with one packet of an SVC stream for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvcVerdict {
    /// Send it with these numbers and marker bit.
    Forward {
        /// Rewritten extended sequence number.
        seq: u64,
        /// Rewritten RTP timestamp.
        time: u32,
        /// Marker: set on the last packet of the highest layer forwarded.
        marker: bool,
    },
    /// Not for this subscriber.
    Drop,
    /// Dropped; the subscriber waits for a keyframe.
    WaitKeyframe,
}

impl Forwarder {
    /// Asks for a highest spatial layer. Returns true when going up, which waits for a
    /// keyframe (Chrome's `L3T3_KEY` predicts between layers only at keyframes).
    pub fn set_spatial_target(&mut self, sid: u8) -> bool {
        if sid == self.svc.target {
            return false;
        }
        self.svc.target = sid;
        sid > self.svc.current
    }

    /// The highest spatial layer being forwarded.
    pub fn spatial(&self) -> u8 {
        self.svc.current
    }

    /// Decides about one packet of a VP9 SVC stream.
    pub fn on_svc_packet(
        &mut self,
        ssrc: Ssrc,
        seq: u64,
        time: u32,
        arrival: Instant,
        desc: Vp9Desc,
        marker: bool,
    ) -> SvcVerdict {
        if self.paused {
            return SvcVerdict::Drop;
        }
        let picture_start = desc.begin && desc.sid == 0;
        let keyframe_start = picture_start && desc.keyframe;
        if self.current != Some((0, ssrc)) {
            // First packet, or the publisher's encoder restarted: begin at a keyframe.
            if !keyframe_start {
                return SvcVerdict::WaitKeyframe;
            }
            self.start_epoch(0, ssrc, seq, time, arrival);
            self.svc.current = self.svc.target;
            self.svc.highest_in = None;
            self.svc.recent.clear();
        } else if picture_start {
            // Down at any picture; up only where the new layer is decodable.
            if self.svc.target < self.svc.current || keyframe_start {
                self.svc.current = self.svc.target;
            }
        }
        let wanted = desc.sid <= self.svc.current;
        let late = self.svc.highest_in.is_some_and(|h| seq <= h);
        if late {
            // A repaired packet: it gets the number reserved for it, if it is still wanted.
            let reserved = self
                .svc
                .recent
                .iter()
                .rev()
                .find(|(i, _)| *i == seq)
                .and_then(|(_, o)| *o);
            return match reserved {
                Some(out) if wanted && seq >= self.epoch_first_in => SvcVerdict::Forward {
                    seq: out,
                    time: time.wrapping_add(self.time_offset),
                    marker: marker || (desc.end && desc.sid == self.svc.current),
                },
                _ => SvcVerdict::Drop,
            };
        }
        // In order. Packets skipped over are missing upstream; reserve their numbers.
        if let Some(h) = self.svc.highest_in {
            for missing in (h + 1)..seq.min(h + 64) {
                self.remember(missing, Some(missing.wrapping_add(self.seq_offset)));
            }
        }
        self.svc.highest_in = Some(seq);
        if !wanted {
            self.remember(seq, None);
            // Close the hole: everything after moves down by one.
            self.seq_offset = self.seq_offset.wrapping_sub(1);
            return SvcVerdict::Drop;
        }
        let Verdict::Forward { seq: out, time } = self.rewrite(seq, time, arrival) else {
            return SvcVerdict::Drop;
        };
        self.remember(seq, Some(out));
        SvcVerdict::Forward {
            seq: out,
            time,
            marker: marker || (desc.end && desc.sid == self.svc.current),
        }
    }

    fn remember(&mut self, seq: u64, out: Option<u64>) {
        if self.svc.recent.len() >= SVC_HISTORY {
            self.svc.recent.pop_front();
        }
        self.svc.recent.push_back((seq, out));
    }
}

/// What is known of one simulcast layer when choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Expected picture height.
    pub height: u32,
    /// Packets seen recently: a layer the publisher paused (Chrome drops its top layer when its
    /// uplink is short) is not chosen.
    pub active: bool,
}

/// Chooses a layer for one subscriber: the best layer no taller than `max_height` among the
/// active ones, else the lowest active one. This is the seam where the bandwidth allocator
/// (a later issue) will add the subscriber's estimated bandwidth as a second cap.
pub fn choose_layer(layers: &[LayerInfo], max_height: Option<u32>) -> usize {
    let cap = max_height.unwrap_or(u32::MAX);
    let any_active = layers.iter().any(|l| l.active);
    let usable = |l: &LayerInfo| l.active || !any_active;
    layers
        .iter()
        .enumerate()
        .filter(|(_, l)| usable(l) && l.height <= cap)
        .max_by_key(|(_, l)| l.height)
        .or_else(|| {
            layers
                .iter()
                .enumerate()
                .filter(|(_, l)| usable(l))
                .min_by_key(|(_, l)| l.height)
        })
        .map(|(i, _)| i)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn audio_forwards_from_the_first_packet_and_stays_continuous() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(false, 48_000, 0);
        let ssrc = Ssrc::from(1);
        let v = f.on_packet(0, ssrc, 70_000, 1000, t0, false);
        assert_eq!(
            v,
            Verdict::Forward {
                seq: 70_000 & 0xffff,
                time: 1000
            }
        );
        let v = f.on_packet(0, ssrc, 70_001, 1960, ms(t0, 20), false);
        assert_eq!(
            v,
            Verdict::Forward {
                seq: (70_000 & 0xffff) + 1,
                time: 1960
            }
        );
        // The publisher restarts with a new SSRC and unrelated numbers: output continues.
        let v = f.on_packet(0, Ssrc::from(2), 5, 777_777, ms(t0, 40), false);
        assert_eq!(
            v,
            Verdict::Forward {
                seq: (70_000 & 0xffff) + 2,
                time: 1960 + 960
            }
        );
    }

    #[test]
    fn video_waits_for_a_keyframe_then_switches_only_at_one() {
        let t0 = Instant::now();
        let (lo, hi) = (Ssrc::from(10), Ssrc::from(20));
        let mut f = Forwarder::new(true, 90_000, 0);
        assert_eq!(
            f.on_packet(0, lo, 100, 0, t0, false),
            Verdict::WaitKeyframe(0)
        );
        assert_eq!(f.on_packet(1, hi, 500, 0, t0, true), Verdict::Drop);
        let Verdict::Forward { seq: s0, .. } = f.on_packet(0, lo, 101, 3000, t0, true) else {
            panic!("keyframe not forwarded")
        };
        let Verdict::Forward { seq: s1, time: t1 } = f.on_packet(0, lo, 102, 3000, t0, false)
        else {
            panic!()
        };
        assert_eq!(s1, s0 + 1);

        // Ask for the high layer: the low one keeps flowing until the high keyframe.
        assert!(f.set_target(1));
        assert!(matches!(
            f.on_packet(1, hi, 501, 9000, ms(t0, 33), false),
            Verdict::WaitKeyframe(1)
        ));
        assert!(matches!(
            f.on_packet(0, lo, 103, 6000, ms(t0, 33), false),
            Verdict::Forward { seq, .. } if seq == s1 + 1
        ));
        let v = f.on_packet(1, hi, 502, 12000, ms(t0, 66), true);
        let Verdict::Forward { seq, time } = v else {
            panic!("{v:?}")
        };
        assert_eq!(seq, s1 + 2, "sequence continues across the switch");
        assert!(time > t1, "timestamps move forward across the switch");
        // The old layer is now dropped, and so is a late packet of the new one from before.
        assert_eq!(
            f.on_packet(0, lo, 104, 9000, ms(t0, 70), true),
            Verdict::Drop
        );
        assert_eq!(
            f.on_packet(1, hi, 501, 9000, ms(t0, 70), false),
            Verdict::Drop
        );
        assert_eq!(f.current(), Some(1));
        assert_eq!(f.switches, 2);
    }

    #[test]
    fn a_forced_switch_down_stops_the_higher_layer_at_once() {
        let t0 = Instant::now();
        let (lo, hi) = (Ssrc::from(10), Ssrc::from(20));
        let mut f = Forwarder::new(true, 90_000, 1);
        let Verdict::Forward { seq: s0, .. } = f.on_packet(1, hi, 500, 0, t0, true) else {
            panic!()
        };
        assert!(f.set_target(0));
        f.drop_layers_above(0);
        // Not sent any more, although the low layer has no keyframe yet.
        assert_eq!(
            f.on_packet(1, hi, 501, 3000, ms(t0, 33), false),
            Verdict::Drop
        );
        assert_eq!(
            f.on_packet(0, lo, 100, 3000, ms(t0, 33), false),
            Verdict::WaitKeyframe(0)
        );
        let Verdict::Forward { seq, .. } = f.on_packet(0, lo, 101, 6000, ms(t0, 66), true) else {
            panic!("the low layer's keyframe is forwarded")
        };
        assert_eq!(seq, s0 + 1);
        // Asking for a lower layer than the current one only: nothing changes otherwise.
        f.drop_layers_above(0);
        assert_eq!(f.current(), Some(0));
    }

    #[test]
    fn a_paused_leg_sends_nothing_and_resumes_at_a_keyframe_with_the_numbering_continued() {
        let t0 = Instant::now();
        let ssrc = Ssrc::from(10);
        let mut f = Forwarder::new(true, 90_000, 0);
        let Verdict::Forward { seq: s0, time: t_0 } = f.on_packet(0, ssrc, 100, 0, t0, true) else {
            panic!()
        };
        f.pause();
        assert!(f.is_paused());
        // Nothing, and no keyframe asked for while paused.
        for (i, key) in [(101, false), (102, true)] {
            assert_eq!(
                f.on_packet(0, ssrc, i, 3000, ms(t0, 33), key),
                Verdict::Drop
            );
        }
        assert!(f.resume(), "it was paused");
        assert!(!f.resume(), "resuming twice is nothing");
        assert_eq!(
            f.on_packet(0, ssrc, 103, 6000, ms(t0, 1000), false),
            Verdict::WaitKeyframe(0)
        );
        let Verdict::Forward { seq, time } = f.on_packet(0, ssrc, 104, 9000, ms(t0, 1033), true)
        else {
            panic!("keyframe after resume not forwarded")
        };
        assert_eq!(
            seq,
            s0 + 1,
            "no hole in the numbering for what was not sent"
        );
        // The clock moved on by the second that passed, not by the publisher's timestamps.
        assert_eq!(time.wrapping_sub(t_0), 90_000 * 1033 / 1000);
    }

    fn vp9(sid: u8, begin: bool, end: bool, keyframe: bool) -> Vp9Desc {
        Vp9Desc {
            keyframe,
            begin,
            end,
            sid,
            tid: 0,
            layered: true,
        }
    }

    #[test]
    fn svc_drops_upper_layers_and_closes_the_sequence_holes() {
        let t0 = Instant::now();
        let ssrc = Ssrc::from(5);
        let mut f = Forwarder::new(true, 90_000, 0);
        f.set_spatial_target(0);
        // Picture 1 (keyframe): one packet per layer, seq 10, 11, 12.
        let a = f.on_svc_packet(ssrc, 10, 0, t0, vp9(0, true, true, true), false);
        let b = f.on_svc_packet(ssrc, 11, 0, t0, vp9(1, true, true, true), false);
        let c = f.on_svc_packet(ssrc, 12, 0, t0, vp9(2, true, true, true), true);
        let SvcVerdict::Forward {
            seq: s0, marker, ..
        } = a
        else {
            panic!("{a:?}")
        };
        assert!(
            marker,
            "the base layer's end carries the marker when it is the top forwarded"
        );
        assert_eq!((b, c), (SvcVerdict::Drop, SvcVerdict::Drop));
        // Picture 2: seq 13 (base) lost upstream for now, 14, 15 upper layers.
        assert_eq!(
            f.on_svc_packet(ssrc, 14, 3000, t0, vp9(1, true, true, false), false),
            SvcVerdict::Drop
        );
        // Its repair arrives: it gets the number right after picture 1's.
        let r = f.on_svc_packet(ssrc, 13, 3000, t0, vp9(0, true, true, false), false);
        assert_eq!(
            r,
            SvcVerdict::Forward {
                seq: s0 + 1,
                time: 3000,
                marker: true
            }
        );
        assert_eq!(
            f.on_svc_packet(ssrc, 15, 3000, t0, vp9(2, true, true, false), true),
            SvcVerdict::Drop
        );
        // Picture 3 continues without a hole.
        let d = f.on_svc_packet(ssrc, 16, 6000, t0, vp9(0, true, true, false), false);
        assert_eq!(
            d,
            SvcVerdict::Forward {
                seq: s0 + 2,
                time: 6000,
                marker: true
            }
        );

        // Up to all layers: waits for a keyframe picture, then forwards everything.
        assert!(f.set_spatial_target(2));
        assert_eq!(
            f.on_svc_packet(ssrc, 17, 6000, t0, vp9(1, true, true, false), false),
            SvcVerdict::Drop
        );
        let k = f.on_svc_packet(ssrc, 18, 9000, t0, vp9(0, true, true, true), false);
        assert_eq!(
            k,
            SvcVerdict::Forward {
                seq: s0 + 3,
                time: 9000,
                marker: false
            }
        );
        let k1 = f.on_svc_packet(ssrc, 19, 9000, t0, vp9(1, true, true, true), false);
        let k2 = f.on_svc_packet(ssrc, 20, 9000, t0, vp9(2, true, true, true), true);
        assert_eq!(
            k1,
            SvcVerdict::Forward {
                seq: s0 + 4,
                time: 9000,
                marker: false
            }
        );
        assert_eq!(
            k2,
            SvcVerdict::Forward {
                seq: s0 + 5,
                time: 9000,
                marker: true
            }
        );
        assert_eq!(f.spatial(), 2);

        // Down again: at the next picture start, no keyframe needed.
        assert!(!f.set_spatial_target(1));
        let p = f.on_svc_packet(ssrc, 21, 12000, t0, vp9(0, true, true, false), false);
        assert_eq!(
            p,
            SvcVerdict::Forward {
                seq: s0 + 6,
                time: 12000,
                marker: false
            }
        );
        let q = f.on_svc_packet(ssrc, 22, 12000, t0, vp9(1, true, true, false), false);
        assert_eq!(
            q,
            SvcVerdict::Forward {
                seq: s0 + 7,
                time: 12000,
                marker: true
            }
        );
        assert_eq!(
            f.on_svc_packet(ssrc, 23, 12000, t0, vp9(2, true, true, false), true),
            SvcVerdict::Drop
        );
    }

    #[test]
    fn layer_choice_respects_cap_and_activity() {
        let l = |height, active| LayerInfo { height, active };
        let layers = [l(180, true), l(360, true), l(720, true)];
        assert_eq!(choose_layer(&layers, None), 2);
        assert_eq!(choose_layer(&layers, Some(360)), 1);
        assert_eq!(choose_layer(&layers, Some(200)), 0);
        assert_eq!(choose_layer(&layers, Some(100)), 0);
        let top_paused = [l(180, true), l(360, true), l(720, false)];
        assert_eq!(choose_layer(&top_paused, None), 1);
        let none_seen = [l(180, false), l(360, false), l(720, false)];
        assert_eq!(choose_layer(&none_seen, Some(400)), 1);
        assert_eq!(choose_layer(&[l(720, true)], Some(100)), 0);
    }
}
