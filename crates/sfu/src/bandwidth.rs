//! Bandwidth towards subscribers: the incoming rate of every layer, str0m's estimate of each
//! subscriber connection's downlink (send-side BWE over TWCC, or the client's REMB), and the
//! stream allocator's decisions ([`crate::allocate`]) applied to each of the subscriber's legs.
//!
//! On only with `SfuConfig::bandwidth_allocation`. When an estimate comes, the subscriber's
//! tracks are shared out again: audio first, video by priority (screen share above camera),
//! each leg capped at a layer (the allocator may decide to pause a track; until the client can
//! be told why, the lowest layer is the floor). The cap sits under the subscriber's own choice
//! (`max_height`), never above it. str0m is then told what
//! the wanted layers would need, so it probes towards it with padding and the layers come back
//! up as the estimate grows.

use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use tracing::debug;

use crate::allocate::{Allocation, LayerRate, VideoDemand, allocate};
use crate::forward::{LayerInfo, choose_layer};
use crate::ids::{PeerId, TrackId};
use crate::sfu::{Down, Sfu};
use crate::signal::{TrackKind, TrackSource};

/// Where a subscriber's estimate starts, until str0m has measured: enough for a 720p camera's
/// top layer and audio, so a good link starts at the quality asked for, and a poor one is
/// found out from the feedback within a second or two (starting low instead had the pacer
/// hold back media on a lossy but fast link while the estimate climbed).
pub(crate) const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(3_000);

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
            _ => infos.len(),
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
        p.estimate = Some(bps);
        self.allocate_for(peer);
    }

    /// Shares the subscriber connection's estimate among the tracks it receives.
    fn allocate_for(&mut self, peer: PeerId) {
        let Some(estimate) = self.peers.get(&peer).and_then(|p| p.estimate) else {
            return;
        };
        let inactive_after = self.config.layer_inactive_after;
        let mut audio = 0.0;
        let mut legs: Vec<(TrackId, usize)> = Vec::new();
        let mut demands: Vec<VideoDemand> = Vec::new();
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
                demands.push(VideoDemand {
                    priority: if track.source == TrackSource::Screen {
                        2
                    } else {
                        1
                    },
                    layers,
                    wanted: choose_layer(infos, down.max_height),
                    current,
                });
                legs.push((*tid, i));
            }
        }
        let (allocations, _) = allocate(estimate, audio, &demands);
        for ((tid, i), a) in legs.into_iter().zip(allocations) {
            let Some(down) = self
                .tracks
                .get_mut(&tid)
                .and_then(|t| t.downstream.get_mut(i))
            else {
                continue;
            };
            // Not paused yet: a subscriber whose video stopped must be told why, over signalling
            // and on its page, and that is the next step. Until then the lowest layer is the
            // floor, which is what was sent before the allocator existed.
            let a = match a {
                Allocation::Paused => Allocation::Layer(0),
                layer => layer,
            };
            if down.alloc != Some(a) {
                debug!(peer = peer.0, track = %tid, estimate_kbps = estimate / 1000.0, "allocation {:?} → {a:?}", down.alloc);
            }
            down.alloc = Some(a);
        }
        // Probe towards what the subscriber asked for: audio and every track's wanted layer.
        let wanted: f64 = demands
            .iter()
            .filter_map(|d| d.layers.get(d.wanted).map(|l| l.bps))
            .sum();
        let desired = Bitrate::bps((audio + wanted) as u64);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.rtc.bwe().set_bitrate(Bitrate::bps(0), desired);
        }
        self.drain(peer);
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
