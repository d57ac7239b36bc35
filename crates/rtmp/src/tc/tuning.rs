//! How long a play's media may wait before it is abandoned: the mapping's reference
//! server's defaults, tunable per play with query parameters on the stream name.

use std::time::Duration;

/// Lifetimes of queued media (the mapping's defaults; tunable per play).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// A video frame must start going within this of being queued.
    pub video_lifetime: Duration,
    /// An audio frame must start going within this.
    pub audio_lifetime: Duration,
    /// And be fully sent this much after its start deadline.
    pub finish_margin: Duration,
    /// A keyframe abandons what is still queued of the GOP before it.
    pub expire_previous_gop: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            video_lifetime: Duration::from_millis(2000),
            audio_lifetime: Duration::from_millis(2200),
            finish_margin: Duration::from_millis(100),
            expire_previous_gop: true,
        }
    }
}

impl Tuning {
    /// The stream name without its query, and the tuning its query asks for.
    pub fn from_name(name: &str) -> (&str, Tuning) {
        let mut t = Tuning::default();
        let Some((base, query)) = name.split_once('?') else {
            return (name, t);
        };
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let secs = v
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && (0.0..=60.0).contains(s))
                .map(Duration::from_secs_f64);
            match (k, secs) {
                ("videoLifetime", Some(d)) => t.video_lifetime = d,
                ("audioLifetime", Some(d)) => t.audio_lifetime = d,
                ("finishByMargin", Some(d)) => t.finish_margin = d,
                ("expirePreviousGop", _) => t.expire_previous_gop = v != "0",
                _ => {}
            }
        }
        (base, t)
    }
}
