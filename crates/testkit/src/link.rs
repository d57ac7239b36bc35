//! The emulated path between one client and the SFU.

use std::time::Duration;

/// Loss in each direction and a one-way delay. Loss is drawn from the scenario's seeded
/// generator, so a seed gives the same drops every run.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Probability (0–1) that a datagram from the client to the SFU is lost.
    pub up_loss: f64,
    /// Probability (0–1) that a datagram from the SFU to the client is lost.
    pub down_loss: f64,
    /// One-way delay.
    pub delay: Duration,
    /// The SFU-to-client direction's capacity in bits per second (`None`: unlimited). Datagrams
    /// queue behind each other at this rate; one that would wait longer than [`Link::queue`]
    /// is dropped, as a router's full buffer drops it.
    pub down_rate: Option<u64>,
    /// The longest a datagram may queue on a rate-limited link.
    pub queue: Duration,
}

impl Link {
    /// A clean link with 10 ms one-way delay.
    pub fn clean() -> Link {
        Link {
            up_loss: 0.0,
            down_loss: 0.0,
            delay: Duration::from_millis(10),
            down_rate: None,
            queue: Duration::from_millis(200),
        }
    }

    /// A clean link whose downlink carries `bps` bits per second.
    pub fn capped(bps: u64) -> Link {
        Link {
            down_rate: Some(bps),
            ..Link::clean()
        }
    }

    /// The same loss in both directions.
    pub fn lossy(loss: f64) -> Link {
        Link {
            up_loss: loss,
            down_loss: loss,
            ..Link::clean()
        }
    }
}
