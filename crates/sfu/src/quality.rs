//! Quality you can see: what str0m's once-a-second statistics say about each peer connection
//! (round trip, loss each way, jitter, bitrates, the candidate pair in use, ICE state), a
//! connection-quality grade per participant pushed to its room, and histograms for Prometheus.
//!
//! The grade comes from a mean opinion score estimated with the simplified ITU-T G.107
//! E-model (the form network monitors use: effective latency from half the round trip plus
//! twice the jitter, 2.5 points of R per percent lost). It is the same scale for audio and
//! video and needs nothing but figures str0m already has.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::IceConnectionState;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use crate::ids::{ParticipantId, PeerId};
use crate::sfu::{Role, Sfu};
use crate::signal::{PcKind, Quality, ServerMessage};

/// How often str0m reports on every connection.
pub(crate) const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// A connection that has received nothing for this long is lost. A browser sends RTCP every
/// second or so while media flows, but a connection that carries none (a subscriber in an
/// empty room) hears only ICE consent checks, every 4 to 6 s (RFC 7675 section 5.1).
const SILENT_IS_LOST: Duration = Duration::from_secs(8);

/// A new grade is announced once every report for this long has given it, so a participant
/// near a boundary does not flicker between two. "Lost" is announced at once.
const GRADE_HOLD: Duration = Duration::from_secs(3);

/// Mean opinion score (1 to 4.5) from the simplified E-model: `rtt` the round trip, `jitter`
/// the interarrival jitter, `loss` the fraction of packets lost (0 to 1). Unknown delays count
/// as none.
pub fn mos(rtt: Option<Duration>, jitter: Option<Duration>, loss: f32) -> f64 {
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let effective = ms(rtt) / 2.0 + 2.0 * ms(jitter) + 10.0;
    let r = if effective < 160.0 {
        93.2 - effective / 40.0
    } else {
        93.2 - (effective - 120.0) / 10.0
    };
    // A figure that is no number (a bad report) counts as no loss; one out of range is clamped.
    let loss = if loss.is_nan() {
        0.0
    } else {
        loss.clamp(0.0, 1.0)
    };
    let r = (r - 2.5 * f64::from(loss) * 100.0).clamp(0.0, 100.0);
    // G.107's cubic dips just below 1 for R under 6.5; the scale's floor is 1.
    (1.0 + 0.035 * r + 0.000_007 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
}

/// The grade of a mean opinion score: 4.1 and above is excellent (at a low round trip, up to
/// about 4 % loss), 3.6 and above good (up to about 8 %), below that poor.
pub fn grade(mos: f64) -> Quality {
    if mos >= 4.1 {
        Quality::Excellent
    } else if mos >= 3.6 {
        Quality::Good
    } else {
        Quality::Poor
    }
}

/// What the latest reports say about one peer connection.
#[derive(Debug, Default)]
pub(crate) struct PeerQuality {
    pub ice: Option<IceConnectionState>,
    /// Protocol, our address, the client's address, as str0m last reported the pair in use.
    pub pair: Option<(
        str0m::net::Protocol,
        std::net::SocketAddr,
        std::net::SocketAddr,
    )>,
    pub rtt: Option<Duration>,
    /// Fraction lost of what the client sent us (publisher connections).
    pub loss_in: Option<f32>,
    /// Fraction lost of what we sent the client (subscriber connections).
    pub loss_out: Option<f32>,
    /// The audio's interarrival jitter, in (publisher) or as the client reports it (subscriber).
    pub jitter: Option<Duration>,
    pub bitrate_in: f64,
    pub bitrate_out: f64,
    /// Bytes received and sent at the last report, and when.
    last: Option<(Instant, u64, u64)>,
    /// When a datagram (STUN included) last arrived from the client.
    pub heard: Option<Instant>,
    pub mos: Option<f64>,
    pub grade: Option<Quality>,
    /// Per m-line (and simulcast RID) figures.
    pub media: HashMap<(Mid, Option<Rid>), MediaQuality>,
}

/// Figures for one m-line (or one simulcast layer of it).
#[derive(Debug, Default, Clone)]
pub(crate) struct MediaQuality {
    pub bitrate: f64,
    pub loss: Option<f32>,
    /// The round trip from the receiver reports (subscriber connections).
    pub rtt: Option<Duration>,
    pub jitter: Option<Duration>,
    pub nacks: u64,
    pub plis: u64,
    last: Option<(Instant, u64)>,
}

impl MediaQuality {
    fn update(&mut self, at: Instant, bytes: u64) {
        if let Some((t, b)) = self.last {
            let secs = at.saturating_duration_since(t).as_secs_f64();
            if secs > 0.05 {
                self.bitrate = bytes.saturating_sub(b) as f64 * 8.0 / secs;
            }
        }
        self.last = Some((at, bytes));
    }
}

/// The ranges of the Prometheus histograms.
const RTT_BUCKETS_MS: &[f64] = &[10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0];
const LOSS_BUCKETS_PCT: &[f64] = &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0];
const JITTER_BUCKETS_MS: &[f64] = &[1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0];

/// A cumulative histogram in Prometheus's shape: counts per upper bound, a sum and a count.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    /// Upper bounds, ascending (the `+Inf` bucket is `count`).
    pub bounds: &'static [f64],
    /// Observations at or below each bound.
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds another histogram's observations (another shard's), bucket by bucket.
    pub fn merge(&mut self, other: &Histogram) {
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// Counts one observation.
    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// Every connection's figures, once per report: round trip (ms), loss (% of packets, the
/// direction the connection carries media in) and audio jitter (ms).
#[derive(Debug, Clone, Serialize)]
pub struct QualityHistograms {
    /// Round trip, milliseconds.
    pub rtt_ms: Histogram,
    /// Packet loss, percent.
    pub loss_pct: Histogram,
    /// Audio interarrival jitter, milliseconds.
    pub jitter_ms: Histogram,
}

impl Default for QualityHistograms {
    fn default() -> Self {
        QualityHistograms {
            rtt_ms: Histogram::new(RTT_BUCKETS_MS),
            loss_pct: Histogram::new(LOSS_BUCKETS_PCT),
            jitter_ms: Histogram::new(JITTER_BUCKETS_MS),
        }
    }
}

impl QualityHistograms {
    /// Adds another shard's figures.
    pub fn merge(&mut self, other: &QualityHistograms) {
        self.rtt_ms.merge(&other.rtt_ms);
        self.loss_pct.merge(&other.loss_pct);
        self.jitter_ms.merge(&other.jitter_ms);
    }
}

/// RTP timestamp units per second of an m-line's media.
fn clock_rate(kind: Option<MediaKind>) -> f64 {
    match kind {
        Some(MediaKind::Audio) => 48_000.0,
        _ => 90_000.0,
    }
}

fn rtp_units(units: u32, rate: f64) -> Duration {
    Duration::from_secs_f64(f64::from(units) / rate)
}

impl Sfu {
    fn media_kind(&self, peer: PeerId, mid: Mid) -> Option<MediaKind> {
        self.peers
            .get(&peer)
            .and_then(|p| p.rtc.media(mid))
            .map(|m| m.kind())
    }

    /// One m-line's figures in from the client (publisher connections).
    pub(crate) fn on_ingress_stats(&mut self, peer: PeerId, s: &MediaIngressStats) {
        let kind = self.media_kind(peer, s.mid);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let jitter = rtp_units(s.jitter, clock_rate(kind));
        let m = p.quality.media.entry((s.mid, s.rid)).or_default();
        m.update(s.timestamp, s.bytes);
        m.loss = s.loss;
        m.jitter = Some(jitter);
        m.nacks = s.nacks;
        m.plis = s.plis;
        if kind == Some(MediaKind::Audio) {
            p.quality.jitter = Some(jitter);
        }
    }

    /// One m-line's figures out to the client, with what its receiver reports said
    /// (subscriber connections).
    pub(crate) fn on_egress_stats(&mut self, peer: PeerId, s: &MediaEgressStats) {
        let kind = self.media_kind(peer, s.mid);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let jitter = s
            .remote
            .as_ref()
            .map(|r| rtp_units(r.jitter, clock_rate(kind)));
        let m = p.quality.media.entry((s.mid, s.rid)).or_default();
        m.update(s.timestamp, s.bytes);
        m.loss = s.loss.or(m.loss);
        m.rtt = s.rtt.or(m.rtt);
        m.jitter = jitter.or(m.jitter);
        m.nacks = s.nacks;
        m.plis = s.plis;
        if kind == Some(MediaKind::Audio) && jitter.is_some() {
            p.quality.jitter = jitter;
        }
    }

    /// The connection's own report, after its m-lines': figures, grade, histograms, and the
    /// participant's grade announced to its room when it changed.
    pub(crate) fn on_quality_stats(&mut self, peer: PeerId, s: &PeerStats) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let q = &mut p.quality;
        if let Some((at, rx, tx)) = q.last {
            let secs = s.timestamp.saturating_duration_since(at).as_secs_f64();
            if secs > 0.05 {
                q.bitrate_in = s.peer_bytes_rx.saturating_sub(rx) as f64 * 8.0 / secs;
                q.bitrate_out = s.peer_bytes_tx.saturating_sub(tx) as f64 * 8.0 / secs;
            }
        }
        // Not heard at all yet: the silence counts from the first report.
        if q.heard.is_none() {
            q.heard = Some(s.timestamp);
        }
        q.last = Some((s.timestamp, s.peer_bytes_rx, s.peer_bytes_tx));
        q.pair = s
            .selected_candidate_pair
            .as_ref()
            .map(|c| (c.protocol, c.local.addr, c.remote.addr));
        // TWCC's round trip where the client sends feedback; else the ICE checks' (full ICE);
        // else the receiver reports' (a subscriber connection without TWCC, ICE-lite: a WHEP
        // viewer of a stream with one layer, session.rs).
        q.rtt = s
            .rtt
            .or_else(|| {
                s.selected_candidate_pair
                    .as_ref()
                    .and_then(|c| c.current_round_trip_time)
            })
            .or_else(|| q.media.values().filter_map(|m| m.rtt).min());
        // Else loss from the m-lines' own figures (the worst; receiver reports for subscribers).
        let rr = |f: fn(&MediaQuality) -> Option<f32>| {
            q.media
                .values()
                .filter_map(f)
                .fold(None, |a: Option<f32>, l| Some(a.map_or(l, |a| a.max(l))))
        };
        let media_loss = rr(|m| m.loss);
        match p.kind {
            PcKind::Publisher => {
                q.loss_in = s.ingress_loss_fraction.or(media_loss);
            }
            PcKind::Subscriber => {
                q.loss_out = s.egress_loss_fraction.or(media_loss);
            }
        }
        let loss = match p.kind {
            PcKind::Publisher => q.loss_in,
            PcKind::Subscriber => q.loss_out,
        };
        let (rtt, jitter) = (q.rtt, q.jitter);
        if let Some(r) = rtt {
            self.histograms.rtt_ms.observe(r.as_secs_f64() * 1000.0);
        }
        if let Some(l) = loss {
            self.histograms.loss_pct.observe(f64::from(l) * 100.0);
        }
        if let Some(j) = jitter {
            self.histograms.jitter_ms.observe(j.as_secs_f64() * 1000.0);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let q = &mut p.quality;
        let silent = q
            .heard
            .is_some_and(|h| s.timestamp.saturating_duration_since(h) >= SILENT_IS_LOST);
        let disconnected = matches!(q.ice, Some(IceConnectionState::Disconnected));
        let m = mos(rtt, jitter, loss.unwrap_or(0.0));
        // A connection that never connected has no grade: a subscriber connection with nothing
        // to receive yet is never negotiated, and was graded lost once str0m's estimate (whose
        // pacer wakes it) had it report an ICE state with nothing heard.
        let connected_once = p.connected_once;
        q.mos = connected_once.then_some(m);
        q.grade = connected_once.then(|| {
            if silent || disconnected {
                Quality::Lost
            } else {
                grade(m)
            }
        });
        let owner = p.owner;
        self.regrade(owner, s.timestamp);
    }

    /// The participant's grade is its worst connection's; announced to its room (itself
    /// included) once it has held for [`GRADE_HOLD`].
    pub(crate) fn regrade(&mut self, pid: ParticipantId, now: Instant) {
        let Some(part) = self.participants.get(&pid) else {
            return;
        };
        let now_grade = [part.publisher, part.subscriber]
            .iter()
            .filter_map(|id| self.peers.get(id))
            .filter_map(|p| p.quality.grade)
            .min();
        let Some(g) = now_grade else { return };
        let Some(part) = self.participants.get_mut(&pid) else {
            return;
        };
        if part.quality == Some(g) {
            part.quality_pending = None;
            return;
        }
        let since = match part.quality_pending {
            Some((pg, since)) if pg == g => since,
            _ => now,
        };
        let held = now.saturating_duration_since(since) >= GRADE_HOLD;
        if !held && g != Quality::Lost && part.quality.is_some() {
            part.quality_pending = Some((g, since));
            return;
        }
        part.quality = Some(g);
        part.quality_pending = None;
        if part.role != Role::Member {
            return;
        }
        let room = part.room.clone();
        let msg = ServerMessage::ConnectionQuality {
            participant_id: pid,
            quality: g,
        };
        self.send(pid, msg.clone());
        self.broadcast(&room, pid, &msg);
    }

    /// Every connection's round trip, loss and jitter so far, for Prometheus.
    pub fn quality_histograms(&self) -> &QualityHistograms {
        &self.histograms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_link_is_excellent_and_heavy_loss_is_poor() {
        let ms = Duration::from_millis;
        assert_eq!(
            grade(mos(Some(ms(20)), Some(ms(2)), 0.0)),
            Quality::Excellent
        );
        assert_eq!(
            grade(mos(Some(ms(50)), Some(ms(5)), 0.02)),
            Quality::Excellent
        );
        assert_eq!(grade(mos(Some(ms(50)), Some(ms(5)), 0.06)), Quality::Good);
        assert_eq!(grade(mos(Some(ms(50)), Some(ms(5)), 0.15)), Quality::Poor);
        // 69 % lost (a 360p layer through a 300 kbit/s link): as bad as it gets.
        assert!((mos(Some(ms(300)), None, 0.69) - 1.0).abs() < 1e-9);
        // Delay alone: a long round trip costs less than loss, but 800 ms is not good.
        assert_eq!(
            grade(mos(Some(ms(300)), Some(ms(10)), 0.0)),
            Quality::Excellent
        );
        assert_eq!(grade(mos(Some(ms(800)), Some(ms(40)), 0.0)), Quality::Poor);
    }

    #[test]
    fn the_score_falls_as_loss_or_delay_grows() {
        let ms = Duration::from_millis;
        let mut last = f64::MAX;
        for pct in 0..40 {
            let m = mos(Some(ms(60)), Some(ms(4)), pct as f32 / 100.0);
            assert!(m <= last, "{pct} %: {m} > {last}");
            assert!((1.0..=4.5).contains(&m));
            last = m;
        }
        let mut last = f64::MAX;
        for rtt in (0..2000).step_by(50) {
            let m = mos(Some(ms(rtt)), None, 0.01);
            assert!(m <= last, "{rtt} ms: {m} > {last}");
            last = m;
        }
    }

    #[test]
    fn absurd_figures_stay_in_range() {
        for loss in [f32::NAN, -1.0, 7.0, f32::INFINITY] {
            let m = mos(Some(Duration::from_secs(3600)), Some(Duration::MAX), loss);
            assert!((1.0..=4.5).contains(&m), "{loss}: {m}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(RTT_BUCKETS_MS);
        for v in [5.0, 30.0, 30.0, 5000.0] {
            h.observe(v);
        }
        assert_eq!(h.count, 4);
        assert_eq!(h.counts[0], 1); // ≤ 10
        assert_eq!(h.counts[2], 3); // ≤ 50
        assert_eq!(*h.counts.last().unwrap(), 3); // ≤ 1600: not the 5 s one
        assert!((h.sum - 5065.0).abs() < 1e-9);
    }
}
