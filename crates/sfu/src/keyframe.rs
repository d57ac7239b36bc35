//! Keyframe requests toward a publisher, aggregated and throttled.
//!
//! Every subscriber that joins, loses packets beyond repair or switches layer wants a keyframe.
//! A publisher that honoured each request would spend its bitrate on keyframes, so requests for
//! one layer within `min_interval` of the last one sent collapse into one, sent when the
//! interval ends. A request is never dropped: the subscriber that asked still gets its keyframe.

use std::time::{Duration, Instant};

/// Throttle state for one layer of one published track.
#[derive(Debug, Default, Clone)]
pub struct KeyframeThrottle {
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeThrottle {
    /// Records a request. Returns true when it should be sent to the publisher now.
    pub fn request(&mut self, now: Instant, min_interval: Duration) -> bool {
        match self.last_sent {
            Some(t) if now < t + min_interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// When a collapsed request falls due, if one is waiting.
    pub fn due(&self, min_interval: Duration) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(t)) => Some(t + min_interval),
            _ => None,
        }
    }

    /// A keyframe arrived on this layer: it answers every request waiting in the throttle.
    pub fn satisfied(&mut self) {
        self.pending = false;
    }

    /// Called at timeouts: true when a collapsed request should be sent now.
    pub fn poll(&mut self, now: Instant, min_interval: Duration) -> bool {
        if self.due(min_interval).is_some_and(|d| d <= now) {
            self.last_sent = Some(now);
            self.pending = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_a_window_collapse_into_one_later() {
        let t0 = Instant::now();
        let w = Duration::from_millis(500);
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0, w));
        assert!(!k.request(t0 + Duration::from_millis(10), w));
        assert!(!k.request(t0 + Duration::from_millis(20), w));
        assert_eq!(k.due(w), Some(t0 + w));
        assert!(!k.poll(t0 + Duration::from_millis(499), w));
        assert!(k.poll(t0 + w, w));
        assert_eq!(k.due(w), None);
        assert!(!k.poll(t0 + w * 3, w));
        assert!(k.request(t0 + w * 3, w));
    }

    #[test]
    fn a_keyframe_cancels_merged_requests() {
        let t0 = Instant::now();
        let w = Duration::from_millis(500);
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0, w));
        assert!(!k.request(t0 + Duration::from_millis(30), w));
        k.satisfied();
        assert_eq!(k.due(w), None);
        assert!(!k.poll(t0 + w, w));
    }
}
