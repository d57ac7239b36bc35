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

use str0m::rtp::Ssrc;

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
}

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
        }
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
