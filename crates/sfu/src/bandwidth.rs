//! Bandwidth towards subscribers: the incoming rate of every layer, str0m's estimate of each
//! subscriber connection's downlink (send-side BWE over TWCC, or the client's REMB), and the
//! stream allocator's decisions ([`crate::allocate`]) applied to each of the subscriber's legs.
//!
//! On only with `SfuConfig::bandwidth_allocation`. When an estimate comes, the subscriber's
//! tracks are shared out again: audio first, video by priority (screen share above camera),
//! each leg capped at a layer, or paused when not even the lowest layer fits (the subscriber
//! is told, `track_paused`). The cap sits under the subscriber's own choice (`max_height`),
//! never above it. str0m is then told what the wanted layers would need, so it probes towards
//! it with padding and the layers come back up as the estimate grows.

use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use tracing::{debug, info};

use crate::allocate::{Allocation, LayerRate, VideoDemand, allocate};
use crate::forward::{LayerInfo, choose_layer};
use crate::ids::{ParticipantId, PeerId, TrackId};
use crate::sfu::{Down, Sfu};
use crate::signal::{PauseReason, ServerMessage, TrackKind, TrackSource};

/// Where a subscriber's estimate starts, until str0m has measured: enough for a 720p camera's
/// top layer and audio, so a good link starts at the quality asked for, and a poor one is
/// found out from the feedback within a second or two (starting low instead had the pacer
/// hold back media on a lossy but fast link while the estimate climbed).
pub(crate) const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(3_000);

/// How often every subscriber's share is worked out again even when its estimate has not
/// changed: layer rates move (a publisher's encoder ramps up), layers come and go, and a
/// subscriber's wanted layer changes with its page.
pub(crate) const ALLOCATION_ROUND: Duration = Duration::from_secs(1);

/// What a video layer of this height is expected to need before it has been measured (and
/// the least it is assumed to need once it has): the SDK's simulcast ceilings, 1.5 Mbit/s at
/// 720p, scaled by picture area. The probe goal is built from it, because str0m probes no
/// higher than twice the goal and takes a probe's result as its estimate: a goal made of the
/// rates measured in a subscriber's first second (the publisher's encoder still ramping up)
/// had str0m probe a clean link at 700 kbit/s and settle its estimate there, far under the
/// 720p layer.
fn nominal_bps(height: u32) -> f64 {
    let h = f64::from(height.max(90));
    (1.5e6 * (h / 720.0) * (h / 720.0)).max(100e3)
}

/// The probe goal moves in steps of this much, so that rates measured a little differently
/// every round do not ask str0m for a new probe each time.
const GOAL_STEP: f64 = 250e3;

/// How long no video layer must fit, on a link seen to be full, before a leg is paused.
pub(crate) const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// How long the estimate must allow a higher layer, with the connection padded up to what
/// that layer needs, before a leg moves up to it.
pub(crate) const UP_HOLD: Duration = Duration::from_millis(1500);

/// How often a connection below its wanted layers has str0m probe (see `allocate_for`).
const NUDGE_EVERY: Duration = Duration::from_secs(2);

/// The padding trial's rate is rounded up to this much.
const TRIAL_STEP: f64 = 50e3;

/// Bytes counted per packet beyond its payload: RTP, SRTP tag, UDP and IP headers.
const PACKET_OVERHEAD: usize = 40;
/// A rate is measured over this much time.
const WINDOW: Duration = Duration::from_millis(500);

/// The bitrate of one layer as it arrives, over [`WINDOW`]s, smoothed.
#[derive(Debug, Default, Clone)]
pub(crate) struct RateMeter {
    window_start: Option<Instant>,
    bytes: usize,
    bps: f64,
}

impl RateMeter {
    /// One packet of `payload` bytes arrived.
    pub fn add(&mut self, now: Instant, payload: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            let sample = self.bytes as f64 * 8.0 / elapsed.as_secs_f64();
            self.bps = if self.bps == 0.0 {
                sample
            } else {
                0.6 * self.bps + 0.4 * sample
            };
            self.bytes = 0;
            self.window_start = Some(now);
        }
        self.bytes += payload + PACKET_OVERHEAD;
    }

    /// Bits per second (0 until a window has passed).
    pub fn bps(&self) -> f64 {
        self.bps
    }
}

impl Down {
    /// The layer to send: the subscriber's choice, no higher than the allocator allows.
    pub(crate) fn choose_layer(&self, infos: &[LayerInfo]) -> usize {
        let allowed = match self.alloc {
            Some(Allocation::Layer(top)) => (top + 1).min(infos.len()),
            // Nothing is sent; the lowest layer is where it starts again.
            Some(Allocation::Paused) => 1.min(infos.len()),
            None => infos.len(),
        };
        choose_layer(&infos[..allowed], self.max_height)
    }
}

impl Sfu {
    /// A new estimate of a subscriber connection's downlink.
    pub(crate) fn on_estimate(&mut self, peer: PeerId, e: BweKind) {
        let bps = match e {
            BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. } => estimate.as_f64(),
            _ => return,
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        tracing::trace!(peer = peer.0, estimate_kbps = bps / 1000.0, "estimate");
        p.estimate = Some(bps);
        self.allocate_for(peer);
        self.drain(peer);
    }

    /// Shares the subscriber connection's estimate among the tracks it receives.
    pub(crate) fn allocate_for(&mut self, peer: PeerId) {
        let Some((estimate, cap)) = self
            .peers
            .get(&peer)
            .and_then(|p| Some((p.estimate?, p.congestion.cap)))
        else {
            return;
        };
        let estimate = cap.map_or(estimate, |cap| estimate.min(cap));
        let inactive_after = self.config.layer_inactive_after;
        let mut audio = 0.0;
        let mut legs: Vec<(TrackId, usize)> = Vec::new();
        let mut demands: Vec<VideoDemand> = Vec::new();
        // The heights of each demand's layers.
        let mut heights: Vec<Vec<u32>> = Vec::new();
        for (tid, track) in &self.tracks {
            for (i, down) in track.downstream.iter().enumerate() {
                if down.peer != peer {
                    continue;
                }
                if track.kind == TrackKind::Audio {
                    audio += track.layers.iter().map(|l| l.rate.bps()).sum::<f64>();
                    continue;
                }
                let infos = track.layer_infos(self.now, inactive_after);
                let infos = infos.as_slice();
                // SVC: a spatial layer needs the ones below it too.
                let svc = track.rids.is_empty();
                let mut below = 0.0;
                let layers = track
                    .layers
                    .iter()
                    .zip(infos)
                    .map(|(l, info)| {
                        let bps = if svc {
                            below + l.rate.bps()
                        } else {
                            l.rate.bps()
                        };
                        below = bps;
                        LayerRate {
                            bps,
                            active: info.active,
                        }
                    })
                    .collect();
                let current = match down.alloc {
                    Some(Allocation::Layer(l)) => Some(l),
                    Some(Allocation::Paused) => None,
                    None if svc => Some(usize::from(down.fwd.spatial())),
                    None => down.fwd.current(),
                };
                let wanted = choose_layer(infos, down.max_height);
                heights.push(infos.iter().map(|i| i.height).collect());
                demands.push(VideoDemand {
                    // Screen shares first, then the camera of the room's loudest speaker.
                    priority: if track.source == TrackSource::Screen {
                        3
                    } else if self.loudest.contains(&track.owner) {
                        2
                    } else {
                        1
                    },
                    layers,
                    wanted,
                    current,
                });
                legs.push((*tid, i));
            }
        }
        let (allocations, _) = allocate(estimate, audio, &demands);
        let now = self.now;
        let mut told: Vec<(ParticipantId, TrackId, bool)> = Vec::new();
        // What each leg was given in the end (after the pause and step-up holds).
        let mut applied: Vec<Allocation> = Vec::with_capacity(legs.len());
        // Some leg waits to move up.
        let mut trial = false;
        for ((tid, i), a) in legs.into_iter().zip(allocations) {
            let Some(down) = self
                .tracks
                .get_mut(&tid)
                .and_then(|t| t.downstream.get_mut(i))
            else {
                applied.push(a);
                continue;
            };
            // Nothing fits: the leg is paused once that has lasted a moment (an estimate dips
            // for a feedback report or two), and until then held at its lowest layer. It
            // resumes as soon as a layer fits again (the allocator wants headroom for that),
            // from a keyframe.
            let a = match a {
                // Only a link seen to be full (congested, below) pauses: str0m's estimate
                // alone undershoots for seconds after a drop in capacity, and pausing on it
                // stopped the video of a 300 kbit/s link that carries the lowest layer.
                Allocation::Paused if cap.is_none() => {
                    down.up_since = None;
                    down.no_fit_since = None;
                    if down.fwd.is_paused() {
                        Allocation::Paused
                    } else {
                        Allocation::Layer(0)
                    }
                }
                Allocation::Paused => {
                    down.up_since = None;
                    let since = *down.no_fit_since.get_or_insert(now);
                    if now >= since + PAUSE_AFTER && !down.fwd.is_paused() {
                        down.fwd.pause();
                        told.push((down.subscriber, tid, true));
                    }
                    if down.fwd.is_paused() {
                        Allocation::Paused
                    } else {
                        Allocation::Layer(0)
                    }
                }
                Allocation::Layer(l) => {
                    down.no_fit_since = None;
                    // Up (or out of a pause) one layer at a time, each once the estimate has
                    // allowed it for UP_HOLD: a probe's result can overshoot for a moment (on a
                    // 300 kbit/s token-bucket link a 15 ms probe burst measured 890 kbit/s), and
                    // jumping to the top layer on it flooded the link and cost seconds of video.
                    let at = match down.alloc {
                        Some(Allocation::Layer(c)) if !down.fwd.is_paused() => Some(c),
                        None => None,
                        _ => Some(usize::MAX), // paused: "one layer up" is the lowest
                    };
                    let l = match at {
                        Some(c) if c == usize::MAX || l > c => {
                            let since = *down.up_since.get_or_insert(now);
                            if now >= since + UP_HOLD {
                                down.up_since = None;
                                c.wrapping_add(1)
                            } else {
                                c
                            }
                        }
                        // Holding: a trial under way goes on through an estimate that dips
                        // to the current layer for a report or two (called off only when it
                        // has run twice its time without the step, or on a move down).
                        Some(c) if l == c => {
                            if down.up_since.is_some_and(|t| now >= t + 2 * UP_HOLD) {
                                down.up_since = None;
                            }
                            l
                        }
                        _ => {
                            down.up_since = None;
                            l
                        }
                    };
                    if l == usize::MAX {
                        Allocation::Paused
                    } else {
                        if down.fwd.resume() {
                            told.push((down.subscriber, tid, false));
                        }
                        Allocation::Layer(l)
                    }
                }
            };
            if let (Some(Allocation::Layer(was)), Allocation::Layer(now_at)) = (down.alloc, a)
                && now_at < was
            {
                down.fwd.drop_layers_above(now_at);
            }
            if down.alloc != Some(a) {
                debug!(peer = peer.0, track = %tid, estimate_kbps = estimate / 1000.0, "allocation {:?} → {a:?}", down.alloc);
            }
            down.alloc = Some(a);
            applied.push(a);
            // Not out of a pause: there the link was just seen to be full, and padding it up to
            // the lowest layer's rate cost the audio that is all it carries (a fifth of it
            // lost while the trial lasted, in the virtual-time test).
            trial |= down.up_since.is_some() && !down.fwd.is_paused();
        }
        for (subscriber, track_id, paused) in told {
            info!(participant = %subscriber, track = %track_id, paused, estimate_kbps = (estimate / 1000.0) as u64, "video paused for bandwidth");
            self.send(
                subscriber,
                ServerMessage::TrackPaused {
                    track_id,
                    paused,
                    reason: PauseReason::Bandwidth,
                },
            );
        }
        // Probe towards what the subscriber asked for: audio and every track's wanted layer,
        // at least what such a layer is expected to need.
        let rate = |d: &VideoDemand, h: &[u32], l: usize| -> f64 {
            let bps = d.layers.get(l).map_or(0.0, |r| r.bps);
            bps.max(nominal_bps(h.get(l).copied().unwrap_or(0)))
        };
        let goal: f64 = audio
            + demands
                .iter()
                .zip(&heights)
                .map(|(d, h)| rate(d, h, d.wanted))
                .sum::<f64>();
        // And while a leg waits to move up, what every leg's next step needs (the lowest layer
        // when paused), for the padding trial below.
        let step: f64 = audio
            + demands
                .iter()
                .zip(&heights)
                .zip(&applied)
                .map(|((d, h), a)| match a {
                    Allocation::Paused => rate(d, h, 0),
                    Allocation::Layer(l) => rate(d, h, (l + 1).min(d.wanted.max(*l))),
                })
                .sum::<f64>();
        // On a link seen to be full, or with a track paused, no further than the next step:
        // str0m probes in bursts of up to twice the goal, and bursts sized for 720p into a
        // link that carries only audio cost a fifth of the audio in the virtual-time test.
        let goal = if cap.is_some() || applied.contains(&Allocation::Paused) {
            step.min(goal)
        } else {
            goal
        };
        let mut goal = ((goal / GOAL_STEP).ceil() * GOAL_STEP) as u64;
        // Below what it asked for on a link not seen to be full: every NUDGE_EVERY the goal
        // goes up a step (and back), which has str0m probe at once rather than at its own
        // pace (every 5 s while the connection sends less than its estimate). After a cap was
        // lifted, the climb to 720p otherwise took longer than 15 s, most of it waiting.
        let below = demands
            .iter()
            .zip(&applied)
            .any(|(d, a)| matches!(a, Allocation::Layer(l) if *l < d.wanted));
        if let Some(p) = self.peers.get_mut(&peer) {
            if below && cap.is_none() && now >= p.next_nudge {
                p.next_nudge = now + NUDGE_EVERY;
                p.nudged = !p.nudged;
            }
            if p.nudged {
                goal += GOAL_STEP as u64;
            }
        }
        // While a leg waits to move up, the connection is kept at the step's rate with padding
        // (str0m's `minimum`, capped by its estimate): if the link cannot carry it, the
        // estimate falls and the step is called off before any video pays for it. A probe's
        // 15 ms burst alone is no proof: through a token bucket it measured three times the
        // rate the link carried, and the estimate stays up as long as less is sent.
        let trial = if trial {
            (((step / TRIAL_STEP).ceil() * TRIAL_STEP) as u64).min(goal)
        } else {
            0
        };
        if let Some(p) = self.peers.get_mut(&peer)
            && (p.probe_goal, p.probe_trial) != (goal, trial)
        {
            debug!(
                peer = peer.0,
                trial, "probe goal {} → {goal} bit/s", p.probe_goal
            );
            p.probe_goal = goal;
            p.probe_trial = trial;
            p.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(trial), Bitrate::bps(goal));
            self.drain(peer);
        }
    }

    /// Every [`ALLOCATION_ROUND`]: each subscriber connection with an estimate is shared out
    /// again.
    pub(crate) fn allocation_round(&mut self, now: Instant) {
        if now < self.next_allocation_round {
            return;
        }
        self.next_allocation_round = now + ALLOCATION_ROUND;
        let peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.estimate.is_some())
            .map(|(id, _)| *id)
            .collect();
        for peer in peers {
            self.allocate_for(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_measures_payload_and_overhead_per_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        // 100 packets of 1210 bytes a second: 1250 bytes each with overhead, 1 Mbit/s.
        for i in 0..=100u64 {
            m.add(t0 + Duration::from_millis(i * 10), 1210);
        }
        assert!((m.bps() - 1e6).abs() < 0.05e6, "{}", m.bps());
        assert_eq!(RateMeter::default().bps(), 0.0);
    }
}
