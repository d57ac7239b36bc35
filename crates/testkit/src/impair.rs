//! A network path's impairments, decided per datagram without IO: delay, jitter, random and
//! bursty loss, reordering, and a rate limit with a queue. [`crate::relay`] puts it between
//! real clients and the server (this machine's kernel has no netem); the virtual-time
//! [`crate::Link`] has its own simpler model.

use std::time::{Duration, Instant};

/// What one direction of a path does to the datagrams on it. The default does nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairment {
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// Each datagram's delay varies by up to this much either way (uniformly). Order is kept
    /// unless [`Self::reorder`] says otherwise, as on a real path whose queue varies.
    pub jitter: Duration,
    /// Probability (0–1) that a datagram is lost, independently of the others.
    pub loss: f64,
    /// Bursty loss on top (Gilbert–Elliott): the path goes bad and loses datagrams in runs.
    pub burst: Option<Burst>,
    /// Probability (0–1) that a datagram is let through at once, ahead of the ones queued
    /// before it (it skips the delay's order).
    pub reorder: f64,
    /// Capacity in bits per second (`None`: unlimited). Datagrams queue behind each other at
    /// this rate; one that would wait longer than [`Self::queue`] is dropped.
    pub rate_bps: Option<u64>,
    /// The longest a datagram may wait in the rate limit's queue (200 ms when zero).
    pub queue: Duration,
}

/// A two-state loss model: in the good state nothing extra is lost; each datagram may move
/// the path between the states.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Probability per datagram of going from good to bad.
    pub enter: f64,
    /// Probability per datagram of going from bad back to good (1 / the mean burst length).
    pub leave: f64,
    /// Probability that a datagram is lost while bad.
    pub loss: f64,
}

/// Why an impairment spec did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// `key=value` expected.
    NotAPair(String),
    /// A key this does not know.
    UnknownKey(String),
    /// A value that is not a number (with its unit), or out of range.
    BadValue { key: String, value: String },
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::NotAPair(s) => write!(f, "'{s}': expected key=value"),
            SpecError::UnknownKey(k) => write!(
                f,
                "unknown key '{k}' (delay, jitter, loss, burst, reorder, rate, queue)"
            ),
            SpecError::BadValue { key, value } => write!(f, "{key}={value}: not a valid value"),
        }
    }
}

impl std::error::Error for SpecError {}

fn millis(key: &str, v: &str) -> Result<Duration, SpecError> {
    let n = v.strip_suffix("ms").unwrap_or(v);
    n.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| SpecError::BadValue {
            key: key.into(),
            value: v.into(),
        })
}

fn share(key: &str, v: &str) -> Result<f64, SpecError> {
    let bad = || SpecError::BadValue {
        key: key.into(),
        value: v.into(),
    };
    let x = match v.strip_suffix('%') {
        Some(p) => p.parse::<f64>().map_err(|_| bad())? / 100.0,
        None => v.parse::<f64>().map_err(|_| bad())?,
    };
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(bad())
    }
}

impl Impairment {
    /// Parses `delay=80ms jitter=20ms loss=10% rate=300k queue=200ms reorder=1%
    /// burst=ENTER/LEAVE/LOSS` (spaces or commas between; `rate=0` lifts the limit; an empty
    /// spec is a clean path).
    pub fn parse(spec: &str) -> Result<Impairment, SpecError> {
        let mut imp = Impairment::default();
        for pair in spec
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| SpecError::NotAPair(pair.into()))?;
            let bad = || SpecError::BadValue {
                key: k.into(),
                value: v.into(),
            };
            match k {
                "delay" => imp.delay = millis(k, v)?,
                "jitter" => imp.jitter = millis(k, v)?,
                "queue" => imp.queue = millis(k, v)?,
                "loss" => imp.loss = share(k, v)?,
                "reorder" => imp.reorder = share(k, v)?,
                "rate" => {
                    let (n, mult) = match v.strip_suffix('k') {
                        Some(n) => (n, 1_000),
                        None => match v.strip_suffix('M') {
                            Some(n) => (n, 1_000_000),
                            None => (v, 1),
                        },
                    };
                    let bps = n.parse::<u64>().map_err(|_| bad())? * mult;
                    imp.rate_bps = (bps > 0).then_some(bps);
                }
                "burst" => {
                    let parts: Vec<&str> = v.split('/').collect();
                    let [enter, leave, loss] = parts[..] else {
                        return Err(bad());
                    };
                    imp.burst = Some(Burst {
                        enter: share(k, enter)?,
                        leave: share(k, leave)?,
                        loss: share(k, loss)?,
                    });
                }
                _ => return Err(SpecError::UnknownKey(k.into())),
            }
        }
        Ok(imp)
    }
}

/// One direction's state: decides, datagram by datagram, whether it is lost and when it leaves.
#[derive(Debug)]
pub struct Shaper {
    imp: Impairment,
    rng: fastrand::Rng,
    bad: bool,
    /// When the rate limit's queue has drained (the last queued datagram is on the wire).
    busy_until: Option<Instant>,
    /// The latest release time given, so that jitter keeps order.
    last_release: Option<Instant>,
    /// Counts, for the relay's report.
    pub passed: u64,
    pub lost: u64,
    pub overflowed: u64,
}

impl Shaper {
    /// A shaper with its own random sequence (`seed`), so a run can be repeated.
    pub fn new(imp: Impairment, seed: u64) -> Shaper {
        Shaper {
            imp,
            rng: fastrand::Rng::with_seed(seed),
            bad: false,
            busy_until: None,
            last_release: None,
            passed: 0,
            lost: 0,
            overflowed: 0,
        }
    }

    /// Changes the impairment from now on (what is already queued keeps its time).
    pub fn set(&mut self, imp: Impairment) {
        self.imp = imp;
    }

    /// The impairment in force.
    pub fn impairment(&self) -> &Impairment {
        &self.imp
    }

    /// A datagram of `len` bytes arrives at `now`: when it leaves, or `None` when it is lost.
    pub fn on_datagram(&mut self, now: Instant, len: usize) -> Option<Instant> {
        if let Some(b) = self.imp.burst {
            let flip = if self.bad { b.leave } else { b.enter };
            if self.rng.f64() < flip {
                self.bad = !self.bad;
            }
            if self.bad && self.rng.f64() < b.loss {
                self.lost += 1;
                return None;
            }
        }
        if self.imp.loss > 0.0 && self.rng.f64() < self.imp.loss {
            self.lost += 1;
            return None;
        }
        // The rate limit: the datagram waits for those before it to be sent.
        let mut at = now;
        if let Some(bps) = self.imp.rate_bps {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let queue = if self.imp.queue.is_zero() {
                Duration::from_millis(200)
            } else {
                self.imp.queue
            };
            if start.saturating_duration_since(now) > queue {
                self.overflowed += 1;
                return None;
            }
            let wire = Duration::from_nanos(len as u64 * 8 * 1_000_000_000 / bps.max(1));
            self.busy_until = Some(start + wire);
            at = start + wire;
        }
        let reorder = self.imp.reorder > 0.0 && self.rng.f64() < self.imp.reorder;
        let mut release = at + self.imp.delay;
        if !self.imp.jitter.is_zero() && !reorder {
            let j = self.imp.jitter.as_secs_f64();
            let offset = (self.rng.f64() * 2.0 - 1.0) * j;
            release = if offset >= 0.0 {
                release + Duration::from_secs_f64(offset)
            } else {
                release
                    .checked_sub(Duration::from_secs_f64(-offset))
                    .unwrap_or(release)
                    .max(at)
            };
        }
        if reorder {
            // Ahead of what is queued: released without the delay's order.
            release = at + self.imp.delay / 2;
        } else if let Some(last) = self.last_release {
            release = release.max(last);
        }
        if !reorder {
            self.last_release = Some(release);
        }
        self.passed += 1;
        Some(release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let imp = Impairment::parse("delay=80ms jitter=20 loss=10%,rate=300k queue=150ms").unwrap();
        assert_eq!(imp.delay, Duration::from_millis(80));
        assert_eq!(imp.jitter, Duration::from_millis(20));
        assert!((imp.loss - 0.1).abs() < 1e-9);
        assert_eq!(imp.rate_bps, Some(300_000));
        assert_eq!(imp.queue, Duration::from_millis(150));
        assert_eq!(Impairment::parse("rate=0").unwrap().rate_bps, None);
        assert_eq!(Impairment::parse("").unwrap(), Impairment::default());
        let b = Impairment::parse("burst=1%/25%/0.8")
            .unwrap()
            .burst
            .unwrap();
        assert_eq!((b.enter, b.leave, b.loss), (0.01, 0.25, 0.8));
        assert!(matches!(
            Impairment::parse("loss=150%"),
            Err(SpecError::BadValue { .. })
        ));
        assert!(matches!(
            Impairment::parse("wobble=1"),
            Err(SpecError::UnknownKey(_))
        ));
        assert!(matches!(
            Impairment::parse("delay"),
            Err(SpecError::NotAPair(_))
        ));
        assert!(matches!(
            Impairment::parse("burst=1/2"),
            Err(SpecError::BadValue { .. })
        ));
    }

    #[test]
    fn loss_is_about_what_was_asked() {
        let mut s = Shaper::new(Impairment::parse("loss=10%").unwrap(), 1);
        let now = Instant::now();
        let lost = (0..20_000)
            .filter(|_| s.on_datagram(now, 1000).is_none())
            .count();
        assert!((1_700..2_300).contains(&lost), "{lost} of 20000");
    }

    #[test]
    fn bursts_lose_in_runs() {
        // Mean burst of 4, 80 % lost while bad: losses come in runs, unlike independent loss.
        let mut s = Shaper::new(Impairment::parse("burst=2%/25%/100%").unwrap(), 2);
        let now = Instant::now();
        let lost: Vec<bool> = (0..20_000)
            .map(|_| s.on_datagram(now, 100).is_none())
            .collect();
        let n = lost.iter().filter(|l| **l).count();
        let runs = lost.windows(2).filter(|w| w[1] && !w[0]).count();
        assert!(n > 500, "{n} lost");
        assert!(n as f64 / runs as f64 > 2.5, "{n} lost in {runs} runs");
    }

    #[test]
    fn delay_and_jitter_keep_order_within_bounds() {
        let mut s = Shaper::new(Impairment::parse("delay=80ms jitter=20ms").unwrap(), 3);
        let t0 = Instant::now();
        let mut last = t0;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i * 5);
            let r = s.on_datagram(now, 1000).unwrap();
            assert!(r >= last, "reordered without being asked to");
            last = r;
            let d = r - now;
            spread = (spread.0.min(d), spread.1.max(d));
        }
        assert!(spread.0 >= Duration::from_millis(60), "{spread:?}");
        // Order is kept, so a datagram may wait for a late one before it: a little over 100 ms.
        assert!(spread.1 <= Duration::from_millis(110), "{spread:?}");
        assert!(
            spread.1 - spread.0 >= Duration::from_millis(30),
            "{spread:?}"
        );
    }

    #[test]
    fn a_rate_limit_queues_then_drops() {
        // 800 kbit/s: a 1000-byte datagram takes 10 ms on the wire; the queue holds 50 ms.
        let mut s = Shaper::new(Impairment::parse("rate=800k queue=50ms").unwrap(), 4);
        let now = Instant::now();
        let out: Vec<Option<Instant>> = (0..10).map(|_| s.on_datagram(now, 1000)).collect();
        assert_eq!(out[0], Some(now + Duration::from_millis(10)));
        assert_eq!(out[4], Some(now + Duration::from_millis(50)));
        assert!(out[6..].iter().all(Option::is_none), "{out:?}");
        assert_eq!(s.overflowed, 4);
        // Once drained it takes datagrams again.
        assert!(
            s.on_datagram(now + Duration::from_millis(70), 1000)
                .is_some()
        );
    }

    #[test]
    fn reordered_datagrams_overtake() {
        let mut s = Shaper::new(Impairment::parse("delay=50ms reorder=20%").unwrap(), 5);
        let t0 = Instant::now();
        let times: Vec<Instant> = (0..500u64)
            .filter_map(|i| s.on_datagram(t0 + Duration::from_millis(i), 100))
            .collect();
        let overtakes = times.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(overtakes > 50, "{overtakes}");
    }
}
