//! A token bucket per allocation: a relay is a free bandwidth amplifier for whoever holds
//! credentials, so each allocation gets a byte rate with a one-second burst.

/// Bytes per second with a burst of one second's worth.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: u64,
    tokens: u64,
    last_ns: u64,
}

impl Bucket {
    /// A full bucket. `rate` 0 means unlimited.
    pub fn new(rate_bytes_per_sec: u64, now_ns: u64) -> Self {
        Self {
            rate: rate_bytes_per_sec,
            tokens: rate_bytes_per_sec,
            last_ns: now_ns,
        }
    }

    /// Takes `bytes` if they fit; false means drop the packet.
    pub fn take(&mut self, bytes: usize, now_ns: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now_ns.saturating_sub(self.last_ns);
        if elapsed > 0 {
            let refill = (u128::from(elapsed) * u128::from(self.rate) / 1_000_000_000) as u64;
            if refill > 0 {
                self.tokens = (self.tokens + refill).min(self.rate);
                self.last_ns = now_ns;
            }
        }
        let bytes = bytes as u64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let mut b = Bucket::new(1000, 0);
        assert!(b.take(600, 0));
        assert!(b.take(400, 0));
        assert!(!b.take(1, 0));
        // Half a second refills 500 bytes.
        assert!(b.take(500, 500_000_000));
        assert!(!b.take(1, 500_000_000));
        // Never more than one second's burst.
        assert!(b.take(1000, 10_000_000_000));
        assert!(!b.take(1, 10_000_000_000));
        let mut unlimited = Bucket::new(0, 0);
        assert!(unlimited.take(usize::MAX / 2, 0));
    }
}
