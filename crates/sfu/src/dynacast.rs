//! Dynacast: a simulcast publisher is told which of its layers anyone receives, and pauses the
//! others (the SDK sets those encodings inactive), so a camera whose every viewer shows it as
//! a small tile stops encoding and uploading its 720p layer.
//!
//! A layer is needed when some subscriber's own choice (`max_height`) reaches it, or a lower
//! layer does not reach it but a higher one does: the publisher keeps every layer from the
//! lowest up to the highest anyone wants, because the stream allocator steps a subscriber down
//! through them when its link cannot carry its choice. The allocator's bandwidth decisions do
//! not count: a layer it holds back can come back within seconds, and it can only come back if
//! its rate is still being measured. The lowest layer always runs, so a new subscriber starts
//! at once (its keyframe is one PLI away, not a re-enabled encoder's ramp-up).
//!
//! More is sent at once when more is needed; less only once that has lasted [`DOWN_HOLD`], so
//! a subscriber flipping a tile between sizes does not restart the publisher's encoder.
//!
//! Room members only: a WHIP publisher has no signalling channel to be told on. A member whose
//! streams the hub's readers watch (HLS players, recordings, RTWebSocket viewers) keeps all its
//! layers: HLS offers one variant per layer (see [`Sfu::set_hub_watched`]).

use std::time::{Duration, Instant};

use crate::forward::{LayerInfo, choose_layer};
use crate::ids::{ParticipantId, TrackId};
use crate::sfu::{Role, Sfu};
use crate::signal::{ServerMessage, TrackKind};

/// How long fewer layers must have been needed before the publisher is told to pause some.
pub(crate) const DOWN_HOLD: Duration = Duration::from_secs(5);

/// How often the needed layers are worked out (and at once after a subscription changes).
pub(crate) const ROUND: Duration = Duration::from_millis(500);

/// What a track's publisher was told.
#[derive(Debug, Default, Clone)]
pub(crate) struct PublisherLayers {
    /// The highest layer it was told to send (`None`: not told; a publisher starts with all).
    pub told: Option<usize>,
    /// Since when fewer layers than told have been needed.
    pub lower_since: Option<Instant>,
}

/// One step of the rule for one track: the layers needed now (`need`, the highest index),
/// what was told, the time. Returns the highest layer to tell the publisher, if it changes.
pub(crate) fn decide(
    state: &mut PublisherLayers,
    layers: usize,
    need: usize,
    now: Instant,
) -> Option<usize> {
    let top = layers.saturating_sub(1);
    let need = need.min(top);
    let current = state.told.unwrap_or(top);
    if need >= current {
        state.lower_since = None;
        return (need > current).then(|| {
            state.told = Some(need);
            need
        });
    }
    let since = *state.lower_since.get_or_insert(now);
    if now.saturating_duration_since(since) < DOWN_HOLD {
        return None;
    }
    state.lower_since = None;
    state.told = Some(need);
    Some(need)
}

impl Sfu {
    /// Whether the hub's readers watch a participant's streams (an HLS player fetched in the
    /// last while, a recording, an RTWebSocket viewer). A watched publisher keeps every layer;
    /// the driver says so, as the SFU does not see the hub's readers.
    pub fn set_hub_watched(&mut self, participant: ParticipantId, watched: bool) {
        let changed = if watched {
            self.hub_watched.insert(participant)
        } else {
            self.hub_watched.remove(&participant)
        };
        if changed {
            self.next_dynacast = self.now;
        }
    }

    /// After a member's socket came back: what it was last told may have been lost with the
    /// old one.
    pub(crate) fn resend_layers_needed(&mut self, pid: ParticipantId) {
        let told: Vec<(TrackId, Vec<String>)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.owner == pid)
            .filter_map(|(tid, t)| {
                let top = t.dynacast.told?;
                let rids = t.rids.iter().take(top + 1).map(|r| r.to_string());
                Some((*tid, rids.collect()))
            })
            .collect();
        for (track_id, rids) in told {
            self.send(pid, ServerMessage::LayersNeeded { track_id, rids });
        }
    }

    /// Works out every simulcast track's needed layers and tells publishers what changed.
    pub(crate) fn dynacast_round(&mut self, now: Instant) {
        if !self.config.dynacast || now < self.next_dynacast {
            return;
        }
        self.next_dynacast = now + ROUND;
        let participants = &self.participants;
        self.hub_watched.retain(|p| participants.contains_key(p));
        let inactive_after = self.config.layer_inactive_after;
        let mut tell: Vec<(ParticipantId, TrackId, Vec<String>)> = Vec::new();
        for (tid, track) in self.tracks.iter_mut() {
            let n = track.rids.len();
            if track.kind != TrackKind::Video || n < 2 {
                continue;
            }
            let member = self
                .participants
                .get(&track.owner)
                .is_some_and(|p| p.role == Role::Member);
            if !member {
                continue;
            }
            // Heights as they are known, every layer counted as sending: a paused layer is
            // still what its subscribers want.
            let infos: Vec<LayerInfo> = track
                .layer_infos(now, inactive_after)
                .as_slice()
                .iter()
                .map(|i| LayerInfo { active: true, ..*i })
                .collect();
            // Watched through the hub or from other shards (whose viewers' layers are not
            // known here): every layer.
            let need = if self.hub_watched.contains(&track.owner) || !track.exports.is_empty() {
                n - 1
            } else {
                // Room members that subscribe (negotiated or not yet), and WHEP viewers.
                let subs = self
                    .participants
                    .values()
                    .filter_map(|p| p.subs.get(tid))
                    .filter(|s| s.want)
                    .map(|s| s.max_height);
                let downs = track.downstream.iter().map(|d| d.max_height);
                subs.chain(downs)
                    .map(|h| choose_layer(&infos, h))
                    .max()
                    .unwrap_or(0)
            };
            if let Some(top) = decide(&mut track.dynacast, n, need, now) {
                let rids = track.rids[..=top].iter().map(|r| r.to_string()).collect();
                tell.push((track.owner, *tid, rids));
            }
        }
        for (owner, track_id, rids) in tell {
            tracing::debug!(track = %track_id, ?rids, "dynacast: layers needed");
            self.send(owner, ServerMessage::LayersNeeded { track_id, rids });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_at_once_fewer_after_the_hold() {
        let t0 = Instant::now();
        let mut s = PublisherLayers::default();
        // The publisher starts with all three: needing all says nothing.
        assert_eq!(decide(&mut s, 3, 2, t0), None);
        // Fewer needed: only after the hold.
        assert_eq!(decide(&mut s, 3, 0, t0), None);
        assert_eq!(decide(&mut s, 3, 0, t0 + DOWN_HOLD / 2), None);
        assert_eq!(decide(&mut s, 3, 0, t0 + DOWN_HOLD), Some(0));
        assert_eq!(s.told, Some(0));
        // More: at once.
        let t1 = t0 + DOWN_HOLD * 2;
        assert_eq!(decide(&mut s, 3, 1, t1), Some(1));
        assert_eq!(decide(&mut s, 3, 1, t1), None);
        // A dip shorter than the hold is forgotten when the need comes back.
        assert_eq!(decide(&mut s, 3, 0, t1), None);
        assert_eq!(decide(&mut s, 3, 1, t1 + DOWN_HOLD / 2), None);
        assert_eq!(decide(&mut s, 3, 0, t1 + DOWN_HOLD * 3 / 4), None);
        assert_eq!(decide(&mut s, 3, 0, t1 + DOWN_HOLD * 3 / 2), None);
        assert_eq!(decide(&mut s, 3, 0, t1 + DOWN_HOLD * 7 / 4), Some(0));
    }

    #[test]
    fn a_need_beyond_the_layers_is_the_top() {
        let t0 = Instant::now();
        let mut s = PublisherLayers {
            told: Some(0),
            lower_since: None,
        };
        assert_eq!(decide(&mut s, 2, 7, t0), Some(1));
        assert_eq!(decide(&mut s, 2, 7, t0), None);
    }
}
