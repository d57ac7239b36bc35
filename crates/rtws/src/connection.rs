//! One end of an RTWebSocket connection: both directions' flows, acks and the scheduler.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ProtocolError;
use crate::send::{Outgoing, SendFlow};
use crate::wire::{Message, data_header_len};

/// Limits and timings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Payload bytes per data fragment (known implementations use 1400).
    pub fragment_size: usize,
    /// The receive buffer advertised for every flow the peer opens.
    pub recv_buffer: u64,
    /// The largest message accepted; a peer going past it breaks the connection.
    pub max_message: usize,
    /// Flows open at once, per direction.
    pub max_flows: usize,
    /// An ack goes at the latest this long after data arrived.
    pub ack_delay: Duration,
    /// The congestion limit before anything is measured.
    pub initial_congestion_window: u64,
    /// The least the measured congestion limit may fall to. Known senders keep 64 KiB; on a
    /// link below the stream's bitrate everything waits behind that much in flight (half a
    /// second at 1 Mbit/s, audio included), so ours goes lower. bandwidth × (RTT + 50 ms)
    /// always leaves room to grow, so a small floor does not cap throughput.
    pub min_congestion_window: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fragment_size: 1400,
            recv_buffer: 2_097_151,
            max_message: 16 << 20,
            max_flows: 256,
            ack_delay: Duration::from_millis(250),
            initial_congestion_window: 64 * 1024,
            min_congestion_window: 16 * 1024,
        }
    }
}

/// The window a sender assumes before the first ack.
const INITIAL_WINDOW: u64 = 65_536;
/// The ack window before the sender sets one.
const INITIAL_ACK_WINDOW: u64 = 2800;
/// Added to the base RTT for the congestion limit (bandwidth × (RTT + this)).
const RTT_MARGIN: Duration = Duration::from_millis(50);

/// Deadlines and dependencies of one message.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendOptions {
    /// Abandon it if its first fragment has not gone this long after it was queued.
    pub start_within: Option<Duration>,
    /// Abandon it if its last fragment has not gone this long after it was queued.
    pub finish_within: Option<Duration>,
    /// It depends on the message before it on the flow: abandoned with it.
    pub depends_on_previous: bool,
    /// Every queued message of the flow not yet started and with a deadline is abandoned
    /// first (a keyframe: the previous GOP is worth nothing now); messages without a deadline
    /// (a sequence header) stay.
    pub expire_queued: bool,
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer opened a flow to us. Refuse it with [`Connection::reject`].
    FlowOpened {
        /// Its ID (in the peer's space).
        flow: u64,
        /// Our send flow it answers, if any.
        return_assoc: Option<u64>,
        /// What it carries.
        metadata: Vec<u8>,
    },
    /// A whole message on one of the peer's flows.
    Message {
        /// The flow.
        flow: u64,
        /// Its number on the flow (1, 2, …; abandoned ones count).
        number: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The peer abandoned messages on a flow (a partial one included).
    Abandoned {
        /// The flow.
        flow: u64,
        /// How many.
        count: u64,
    },
    /// The peer closed one of its flows.
    FlowClosed {
        /// The flow.
        flow: u64,
    },
    /// The peer refused (or raised an exception on) one of our flows; its queue is dropped.
    Rejected {
        /// Our flow.
        flow: u64,
        /// The reason code, if given.
        code: Option<u64>,
        /// The reason, if given.
        text: String,
    },
    /// The peer acked the close of one of our flows: its ID is free again.
    SendFlowClosed {
        /// Our flow.
        flow: u64,
    },
    /// A reply to [`Connection::ping`].
    Pong(Vec<u8>),
}

struct RecvFlow {
    /// The message being reassembled.
    partial: Vec<u8>,
    /// Number of the next message.
    number: u64,
    /// Bytes received (whole data messages, headers included), and acked.
    received: u64,
    acked: u64,
    /// The last advertisement queued (acks happen when half of it is used).
    advertised: u64,
    /// The position the peer may send up to by the acks that have actually gone out: a peer
    /// past it ignores the window.
    granted: u64,
    /// We refused it: its data is dropped (and still acked).
    rejected: bool,
    /// The peer closed it: the last ack advertises nothing.
    closed: bool,
}

/// An ack's grant: (flow, the position up to which the peer may send).
type Grant = (u64, u64);

/// One end of a connection. See the [crate] docs.
pub struct Connection {
    config: Config,
    recv: BTreeMap<u64, RecvFlow>,
    send: BTreeMap<u64, SendFlow>,
    /// Protocol messages ready to go ahead of any data (acks, opens, pings, closes); an ack
    /// carries the position it grants its flow, which counts once it is sent.
    control: VecDeque<(Vec<u8>, Option<Grant>)>,
    events: VecDeque<Event>,
    /// As a receiver: bytes after which an ack goes at once (the peer sets it).
    ack_window: u64,
    bytes_since_ack: u64,
    /// As a receiver: flows with acks to send, and when at the latest.
    ack_due: Option<Instant>,
    acks_wanted: Vec<u64>,
    /// As a sender: the ack window last asked of the peer.
    ack_window_sent: u64,
    /// The flow served last at each priority, for turns within a level.
    last_served: [Option<u64>; 8],
    // Congestion: unacked bytes over all flows, the limit, and one RTT probe at a time:
    // (flow, position to be acked, sent at, acked total then).
    inflight: u64,
    congestion_window: u64,
    probe: Option<(u64, u64, Instant, u64)>,
    acked_total: u64,
    min_rtt: Option<Duration>,
}

impl Connection {
    /// A connection with `config`.
    pub fn new(config: Config) -> Connection {
        Connection {
            congestion_window: config.initial_congestion_window,
            config,
            recv: BTreeMap::new(),
            send: BTreeMap::new(),
            control: VecDeque::new(),
            events: VecDeque::new(),
            ack_window: INITIAL_ACK_WINDOW,
            bytes_since_ack: 0,
            ack_due: None,
            acks_wanted: Vec::new(),
            ack_window_sent: INITIAL_ACK_WINDOW,
            last_served: [None; 8],
            inflight: 0,
            probe: None,
            acked_total: 0,
            min_rtt: None,
        }
    }

    /// The smallest RTT measured, once acks have measured one.
    pub fn rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The current limit on unacked bytes over all flows.
    pub fn congestion_window(&self) -> u64 {
        self.congestion_window
    }

    /// Bytes sent and not yet acked, over all flows.
    pub fn inflight(&self) -> u64 {
        self.inflight
    }

    /// Opens a send flow `flow` (IDs are ours to choose; a closed one is free once its close
    /// was acked) at `priority` 0–7, optionally answering the peer's flow `return_assoc`.
    /// False when the ID is in use or the limit of flows is reached.
    pub fn open(
        &mut self,
        flow: u64,
        priority: u8,
        return_assoc: Option<u64>,
        metadata: &[u8],
    ) -> bool {
        if self.send.contains_key(&flow) || self.send.len() >= self.config.max_flows {
            return false;
        }
        self.send
            .insert(flow, SendFlow::new(priority, INITIAL_WINDOW));
        self.push_control(
            Message::Open {
                flow,
                return_assoc,
                metadata,
            }
            .to_vec(),
        );
        true
    }

    /// Queues a message on send flow `flow`. False when the flow is not open (or closing or
    /// refused).
    pub fn send(&mut self, now: Instant, flow: u64, data: Vec<u8>, opts: SendOptions) -> bool {
        let Some(f) = self.send.get_mut(&flow) else {
            return false;
        };
        if f.closing || f.rejected {
            return false;
        }
        if opts.expire_queued {
            f.expire_queued();
        }
        f.queue.push_back(Outgoing {
            data,
            offset: 0,
            start_by: opts.start_within.map(|d| now + d),
            finish_by: opts.finish_within.map(|d| now + d),
            depends: opts.depends_on_previous,
            abandoned: false,
        });
        true
    }

    /// Bytes queued on a send flow, not yet sent.
    pub fn queued(&self, flow: u64) -> usize {
        self.send.get(&flow).map_or(0, |f| {
            f.queue
                .iter()
                .filter(|m| !m.abandoned)
                .map(|m| m.data.len() - m.offset)
                .sum()
        })
    }

    /// Messages queued on all send flows, abandoned ones not yet announced included: what a
    /// peer that stopped acknowledging makes grow (the application closes past a limit).
    pub fn backlog(&self) -> usize {
        self.send.values().map(|f| f.queue.len()).sum()
    }

    /// Closes a send flow once what is queued has gone.
    pub fn close(&mut self, flow: u64) {
        if let Some(f) = self.send.get_mut(&flow) {
            f.closing = true;
        }
    }

    /// Refuses (or raises an exception on) the peer's flow `flow`.
    pub fn reject(&mut self, flow: u64, code: u64, text: &str) {
        if let Some(f) = self.recv.get_mut(&flow) {
            f.rejected = true;
            f.partial = Vec::new();
            self.push_control(
                Message::Exception {
                    flow,
                    code: Some(code),
                    text: Some(text.as_bytes()),
                }
                .to_vec(),
            );
        }
    }

    /// Sends a ping; the reply comes as [`Event::Pong`].
    pub fn ping(&mut self, data: &[u8]) {
        self.push_control(Message::Ping(data).to_vec());
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadlines = self.send.values().filter_map(SendFlow::next_deadline);
        self.ack_due.into_iter().chain(deadlines).min()
    }

    /// Time passed: acks fall due, messages miss their deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ack_due.is_some_and(|t| now >= t) {
            self.flush_acks();
        }
        for f in self.send.values_mut() {
            f.expire(now);
        }
    }

    /// One binary WebSocket message from the peer.
    pub fn receive(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ProtocolError> {
        let Some(msg) = Message::parse(bytes)? else {
            return Ok(()); // an unknown type: ignored
        };
        match msg {
            Message::Ping(b) => self.push_control(Message::PingReply(b).to_vec()),
            Message::PingReply(b) => self.events.push_back(Event::Pong(b.to_vec())),
            // A zero window would mean an ack per byte: at least one fragment's worth.
            Message::AckWindow(w) => self.ack_window = w.max(1),
            Message::Open {
                flow,
                return_assoc,
                metadata,
            } => self.on_open(flow, return_assoc, metadata)?,
            Message::Data { flow, more, data } => {
                self.on_data(now, flow, more, data, bytes.len())?
            }
            Message::Abandon { flow, count } => {
                let f = self
                    .recv
                    .get_mut(&flow)
                    .ok_or(ProtocolError::UnknownFlow(flow))?;
                // A partial message is one of those abandoned.
                f.partial = Vec::new();
                f.number = f.number.saturating_add(count);
                self.events.push_back(Event::Abandoned { flow, count });
                self.want_ack(flow);
                self.flush_acks();
            }
            Message::Close { flow } => {
                let f = self
                    .recv
                    .get_mut(&flow)
                    .ok_or(ProtocolError::UnknownFlow(flow))?;
                f.closed = true;
                self.want_ack(flow);
                self.flush_acks();
                self.recv.remove(&flow);
                self.push_control(Message::CloseAck { flow }.to_vec());
                self.events.push_back(Event::FlowClosed { flow });
            }
            Message::Ack {
                flow,
                delta,
                advertisement,
            } => self.on_ack(now, flow, delta, advertisement)?,
            Message::CloseAck { flow } => {
                if self.send.remove(&flow).is_none() {
                    return Err(ProtocolError::UnknownFlow(flow));
                }
                self.events.push_back(Event::SendFlowClosed { flow });
            }
            Message::Exception { flow, code, text } => {
                let f = self
                    .send
                    .get_mut(&flow)
                    .ok_or(ProtocolError::UnknownFlow(flow))?;
                // Everything queued is abandoned; the close still goes.
                f.rejected = true;
                f.closing = true;
                for m in &mut f.queue {
                    m.abandon();
                }
                self.events.push_back(Event::Rejected {
                    flow,
                    code,
                    text: String::from_utf8_lossy(text.unwrap_or_default()).into_owned(),
                });
            }
        }
        Ok(())
    }

    fn on_open(
        &mut self,
        flow: u64,
        return_assoc: Option<u64>,
        metadata: &[u8],
    ) -> Result<(), ProtocolError> {
        if self.recv.contains_key(&flow) {
            return Err(ProtocolError::FlowInUse(flow));
        }
        if self.recv.len() >= self.config.max_flows {
            return Err(ProtocolError::TooManyFlows(self.config.max_flows));
        }
        self.recv.insert(
            flow,
            RecvFlow {
                partial: Vec::new(),
                number: 1,
                received: 0,
                acked: 0,
                advertised: INITIAL_WINDOW,
                granted: INITIAL_WINDOW,
                rejected: false,
                closed: false,
            },
        );
        // An open answering none of our flows is refused.
        if let Some(a) = return_assoc
            && self.send.get(&a).is_none_or(|f| f.closing)
        {
            self.reject(flow, 0, "no such flow to answer");
        } else {
            self.events.push_back(Event::FlowOpened {
                flow,
                return_assoc,
                metadata: metadata.to_vec(),
            });
        }
        self.want_ack(flow);
        self.flush_acks();
        Ok(())
    }

    fn on_data(
        &mut self,
        now: Instant,
        flow: u64,
        more: bool,
        data: &[u8],
        wire_len: usize,
    ) -> Result<(), ProtocolError> {
        let limit = self.config.max_message;
        // The limit holds for all partial messages together: a peer that opens every flow it
        // may and never ends a message on any holds at most one message's worth.
        let partial_total: usize = self.recv.values().map(|r| r.partial.len()).sum();
        let f = self
            .recv
            .get_mut(&flow)
            .ok_or(ProtocolError::UnknownFlow(flow))?;
        f.received += wire_len as u64;
        if f.received > f.granted {
            return Err(ProtocolError::WindowOverrun {
                flow,
                sent: f.received,
                window: f.granted,
            });
        }
        if !f.rejected {
            if partial_total + data.len() > limit {
                return Err(ProtocolError::MessageTooLarge { flow, limit });
            }
            f.partial.extend_from_slice(data);
            if !more {
                self.events.push_back(Event::Message {
                    flow,
                    number: f.number,
                    data: std::mem::take(&mut f.partial),
                });
            }
        }
        if !more {
            f.number += 1;
        }
        let half_window = f.received - f.acked >= f.advertised / 2;
        self.bytes_since_ack += wire_len as u64;
        self.want_ack(flow);
        if half_window || self.bytes_since_ack >= self.ack_window {
            self.flush_acks();
        } else if self.ack_due.is_none() {
            self.ack_due = Some(now + self.config.ack_delay);
        }
        Ok(())
    }

    fn on_ack(
        &mut self,
        now: Instant,
        flow: u64,
        delta: u64,
        advertisement: u64,
    ) -> Result<(), ProtocolError> {
        let f = self
            .send
            .get_mut(&flow)
            .ok_or(ProtocolError::UnknownFlow(flow))?;
        let acked = f.acked.saturating_add(delta);
        if acked > f.sent {
            return Err(ProtocolError::AckBeyondSent {
                flow,
                acked,
                sent: f.sent,
            });
        }
        f.acked = acked;
        f.window = advertisement;
        self.inflight = self.inflight.saturating_sub(delta);
        self.acked_total += delta;
        // The RTT probe: the noted position of this flow is acked now.
        if let Some((pf, position, at, acked_then)) = self.probe
            && pf == flow
            && acked >= position
        {
            let rtt = now.saturating_duration_since(at);
            let min = self.min_rtt.map_or(rtt, |m| m.min(rtt));
            self.min_rtt = Some(min);
            // Bandwidth: what was acked while the probe was out.
            let secs = rtt.as_secs_f64().max(0.001);
            let bw = (self.acked_total - acked_then) as f64 / secs;
            let limit = (bw * (min + RTT_MARGIN).as_secs_f64()) as u64;
            self.congestion_window = limit.max(self.config.min_congestion_window);
            self.probe = None;
        }
        Ok(())
    }

    fn push_control(&mut self, m: Vec<u8>) {
        self.control.push_back((m, None));
    }

    fn want_ack(&mut self, flow: u64) {
        if !self.acks_wanted.contains(&flow) {
            self.acks_wanted.push(flow);
        }
    }

    /// Queues the pending acks, all together.
    fn flush_acks(&mut self) {
        for flow in std::mem::take(&mut self.acks_wanted) {
            let Some(f) = self.recv.get_mut(&flow) else {
                continue;
            };
            // What is held for the application is the partial message: everything whole has
            // been handed over already.
            let advertisement = if f.closed {
                0
            } else {
                self.config
                    .recv_buffer
                    .saturating_sub(f.partial.len() as u64)
            };
            let delta = f.received - f.acked;
            f.acked = f.received;
            f.advertised = advertisement;
            let grant = (flow, f.received.saturating_add(advertisement));
            self.control.push_back((
                Message::Ack {
                    flow,
                    delta,
                    advertisement,
                }
                .to_vec(),
                Some(grant),
            ));
        }
        self.bytes_since_ack = 0;
        self.ack_due = None;
    }

    /// The next WebSocket message to send, if anything may go now.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some((m, grant)) = self.control.pop_front() {
            if let Some((flow, limit)) = grant
                && let Some(f) = self.recv.get_mut(&flow)
            {
                f.granted = f.granted.max(limit);
            }
            return Some(m);
        }
        for f in self.send.values_mut() {
            f.expire(now);
        }
        // Abandoned messages at a queue's head are announced before anything else.
        for (&flow, f) in self.send.iter_mut() {
            let count = f.take_abandoned();
            if count > 0 {
                return Some(Message::Abandon { flow, count }.to_vec());
            }
        }
        if let Some(m) = self.next_fragment(now) {
            return Some(m);
        }
        // Drained flows that are closing say so.
        for (&flow, f) in self.send.iter_mut() {
            if f.closing && !f.close_sent && f.queue.is_empty() {
                f.close_sent = true;
                return Some(Message::Close { flow }.to_vec());
            }
        }
        None
    }

    /// A fragment of the highest-priority flow that may send, flows of one level in turn.
    fn next_fragment(&mut self, now: Instant) -> Option<Vec<u8>> {
        let room = self.congestion_window.saturating_sub(self.inflight);
        for level in (0..8u8).rev() {
            let ready: Vec<u64> = self
                .send
                .iter()
                .filter(|(_, f)| f.priority == level && !f.rejected)
                .filter(|&(&id, f)| {
                    let Some(m) = f.queue.front() else {
                        return false;
                    };
                    // The receiver's window is never exceeded: a fragment is cut down to what
                    // it has room for (a strict receiver closes the connection otherwise).
                    let Some(len) = self.fragment_len(id, m, f.window_left()) else {
                        return false;
                    };
                    // The congestion limit is ours: one fragment may always go on an idle
                    // connection, so a limit smaller than a fragment cannot stall it.
                    len <= room || self.inflight == 0
                })
                .map(|(&id, _)| id)
                .collect();
            if ready.is_empty() {
                continue;
            }
            // Turns: the first flow after the one served last.
            let last = self.last_served[level as usize];
            let flow = ready
                .iter()
                .copied()
                .find(|&id| last.is_none_or(|l| id > l))
                .unwrap_or(ready[0]);
            self.last_served[level as usize] = Some(flow);
            return self.fragment(now, flow);
        }
        None
    }

    /// Payload bytes of the next fragment of `m` within `window` bytes, with the header's
    /// length: `None` when not even one payload byte fits (an empty message needs only the
    /// header).
    fn fragment_fit(&self, flow: u64, m: &Outgoing, window: u64) -> Option<(usize, u64)> {
        let header = data_header_len(flow);
        let left = m.data.len() - m.offset;
        let room = usize::try_from(window)
            .unwrap_or(usize::MAX)
            .checked_sub(header)?;
        let payload = left.min(self.config.fragment_size).min(room);
        (payload > 0 || left == 0).then_some((payload, (header + payload) as u64))
    }

    fn fragment_len(&self, flow: u64, m: &Outgoing, window: u64) -> Option<u64> {
        self.fragment_fit(flow, m, window).map(|(_, len)| len)
    }

    fn fragment(&mut self, now: Instant, flow: u64) -> Option<Vec<u8>> {
        let (payload, _) = {
            let f = self.send.get(&flow)?;
            self.fragment_fit(flow, f.queue.front()?, f.window_left())?
        };
        let f = self.send.get_mut(&flow)?;
        let m = f.queue.front_mut()?;
        let end = m.offset + payload;
        let more = end < m.data.len();
        let bytes = Message::Data {
            flow,
            more,
            data: &m.data[m.offset..end],
        }
        .to_vec();
        m.offset = end;
        if !more {
            f.queue.pop_front();
            f.chain_broken = false;
        }
        f.sent += bytes.len() as u64;
        self.inflight += bytes.len() as u64;
        if self.probe.is_none() {
            self.probe = Some((flow, f.sent, now, self.acked_total));
        }
        // The ack window asked of the peer follows what is in flight (as known senders do).
        let want = (self.inflight / 4).clamp(INITIAL_ACK_WINDOW, 4 * INITIAL_ACK_WINDOW);
        if want != self.ack_window_sent && want.abs_diff(self.ack_window_sent) >= 1400 {
            self.ack_window_sent = want;
            self.push_control(Message::AckWindow(want).to_vec());
        }
        Some(bytes)
    }
}
