//! One send flow: its queue of messages, their deadlines, and the flow's window.

use std::collections::VecDeque;
use std::time::Instant;

/// A queued message.
pub(crate) struct Outgoing {
    pub data: Vec<u8>,
    /// Bytes of it sent so far.
    pub offset: usize,
    /// Abandon it if its first fragment has not gone by then.
    pub start_by: Option<Instant>,
    /// Abandon it if its last fragment has not gone by then.
    pub finish_by: Option<Instant>,
    /// It depends on the message before it (a video frame on the rest of its GOP): when that
    /// one is abandoned, so is this.
    pub depends: bool,
    pub abandoned: bool,
}

impl Outgoing {
    pub fn started(&self) -> bool {
        self.offset > 0
    }

    /// Marks it abandoned. Its bytes go at once (unless part of it went: the head of the
    /// queue, taken at the next transmit): a message stuck at the head (one without a deadline
    /// a peer never acks) must not keep every later abandoned frame's bytes alive.
    pub fn abandon(&mut self) {
        self.abandoned = true;
        if !self.started() {
            self.data = Vec::new();
        }
    }
}

pub(crate) struct SendFlow {
    pub priority: u8,
    pub queue: VecDeque<Outgoing>,
    /// Position the peer has acked (the sum of its deltas).
    pub acked: u64,
    /// What it advertised beyond that.
    pub window: u64,
    /// Bytes sent (whole data protocol messages, headers included).
    pub sent: u64,
    /// The application closed it: `1c` goes once the queue drains.
    pub closing: bool,
    pub close_sent: bool,
    /// The peer refused it (`5e`): nothing more is sent but the close.
    pub rejected: bool,
    /// The last message was abandoned: the next that depends on it goes too.
    pub chain_broken: bool,
}

impl SendFlow {
    pub fn new(priority: u8, initial_window: u64) -> SendFlow {
        SendFlow {
            priority: priority.min(7),
            queue: VecDeque::new(),
            acked: 0,
            window: initial_window,
            sent: 0,
            closing: false,
            close_sent: false,
            rejected: false,
            chain_broken: false,
        }
    }

    /// Bytes the window lets out now.
    pub fn window_left(&self) -> u64 {
        (self.acked + self.window).saturating_sub(self.sent)
    }

    /// Marks messages whose deadline passed as abandoned, and those that depend on an
    /// abandoned one.
    pub fn expire(&mut self, now: Instant) {
        let mut broken = self.chain_broken;
        for m in &mut self.queue {
            if !m.abandoned {
                let late = if m.started() {
                    m.finish_by.is_some_and(|t| now >= t)
                } else {
                    m.start_by.is_some_and(|t| now >= t) || m.finish_by.is_some_and(|t| now >= t)
                };
                if late || (broken && m.depends) {
                    m.abandon();
                }
            }
            broken = m.abandoned;
        }
    }

    /// Abandons every message not yet started that has a deadline (a new GOP makes the old
    /// one worthless). Messages without one (a sequence header, a command) are kept.
    pub fn expire_queued(&mut self) {
        for m in &mut self.queue {
            if !m.started() && (m.start_by.is_some() || m.finish_by.is_some()) {
                m.abandon();
            }
        }
    }

    /// Takes the abandoned messages at the head of the queue: how many (for one `1a`).
    pub fn take_abandoned(&mut self) -> u64 {
        let mut n = 0;
        while self.queue.front().is_some_and(|m| m.abandoned) {
            self.queue.pop_front();
            n += 1;
        }
        if n > 0 {
            self.chain_broken = true;
        }
        n
    }

    /// The earliest deadline of a queued message.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue
            .iter()
            .filter(|m| !m.abandoned)
            .flat_map(|m| [if m.started() { None } else { m.start_by }, m.finish_by])
            .flatten()
            .min()
    }
}
