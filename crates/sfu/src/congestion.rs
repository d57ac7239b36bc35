//! Congestion seen from loss and round trip, beside str0m's estimate: when the link to a
//! subscriber loses packets while its round trip grows (a queue filling), what is sent is held
//! to what the link delivered until the queue is gone, and only a link seen to be full lets
//! the allocator pause video ([`crate::bandwidth`]). Random loss alone (a radio link) does not
//! count: its round trip stays low.

use std::time::{Duration, Instant};

use str0m::stats::PeerStats;
use tracing::debug;

use crate::ids::PeerId;
use crate::sfu::Sfu;

/// Loss above this share of what was sent over the last second, with the round trip
/// [`QUEUE_DELAY`] above its lowest, is a full link: the allocation is then held to what the
/// link delivered. Random loss alone (a radio link) does not count: its round trip stays low.
const CONGESTED_LOSS: f32 = 0.05;
/// A round trip this much above the lowest seen is a queue building on the path.
const QUEUE_DELAY: Duration = Duration::from_millis(100);

/// What a subscriber connection's loss and round trip say about its link.
#[derive(Debug, Default, Clone)]
pub(crate) struct Congestion {
    /// The lowest round trip seen.
    min_rtt: Option<Duration>,
    /// Bytes sent at the last report.
    bytes_tx: u64,
    at: Option<Instant>,
    /// While congested: the rate the link delivered (bit/s), which the allocation may not
    /// exceed whatever the estimate says.
    pub cap: Option<f64>,
}

impl Sfu {
    /// Once a second from str0m: a link that loses packets while its round trip grows is full,
    /// and the allocation is held to what it delivered until the queue is gone. str0m's own
    /// estimate takes seconds to come down there (a 100 kbit/s cap kept it near 650 kbit/s
    /// for 4 s while a 360p layer flooded the link).
    pub(crate) fn on_peer_stats(&mut self, peer: PeerId, s: &PeerStats) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let c = &mut p.congestion;
        let sent_bps = c.at.map(|at| {
            let secs = s.timestamp.saturating_duration_since(at).as_secs_f64();
            (s.peer_bytes_tx.saturating_sub(c.bytes_tx) as f64 * 8.0) / secs.max(0.1)
        });
        c.at = Some(s.timestamp);
        c.bytes_tx = s.peer_bytes_tx;
        let Some(rtt) = s.rtt else { return };
        let min_rtt = *c.min_rtt.get_or_insert(rtt);
        c.min_rtt = Some(min_rtt.min(rtt));
        let loss = s.egress_loss_fraction.unwrap_or(0.0);
        let queued = rtt > min_rtt + QUEUE_DELAY;
        let was = c.cap;
        if loss > CONGESTED_LOSS && queued {
            if let Some(sent) = sent_bps {
                let delivered = sent * f64::from(1.0 - loss);
                // Never above a cap already set: the link is still full.
                c.cap = Some(c.cap.map_or(delivered, |cap| cap.min(delivered)));
            }
        } else if !queued && loss < CONGESTED_LOSS / 2.0 {
            c.cap = None;
        }
        if c.cap != was {
            debug!(
                peer = peer.0,
                loss,
                rtt_ms = rtt.as_millis() as u64,
                min_rtt_ms = min_rtt.as_millis() as u64,
                "congestion cap {was:?} → {:?}",
                c.cap
            );
            self.allocate_for(peer);
            self.drain(peer);
        }
    }
}
