//! RTWebSocket, sans-IO: many flows over one WebSocket, each with its own receive window and
//! acknowledgments, sender-side priorities, and messages a sender can abandon when they are no
//! longer worth sending (a stale video frame). The wire format is in `../shared/specs/
//! rtwebsocket.md`; this crate is written from it.
//!
//! [`Connection`] is one end of a connection. The IO layer hands it every binary WebSocket
//! message ([`Connection::receive`]), sends what [`Connection::poll_transmit`] gives, delivers
//! [`Connection::poll_event`]'s events to the application, and calls
//! [`Connection::handle_timeout`] at [`Connection::poll_timeout`]. No threads, no clock of its
//! own: time comes in as arguments, so tests are exact.
//!
//! A [`ProtocolError`] from `receive` means the peer broke the protocol: close the WebSocket
//! with its text as the reason. Nothing it did can grow memory past the configured limits.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection;
mod send;
pub mod vlu;
pub mod wire;

pub use connection::{Config, Connection, Event, SendOptions};

/// A protocol message that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A WebSocket message with no bytes.
    #[error("empty message")]
    Empty,
    /// A `vlu` cut off before its last byte.
    #[error("truncated vlu")]
    VluTruncated,
    /// A `vlu` of more than 64 bits.
    #[error("vlu longer than 64 bits")]
    VluTooLong,
}

/// What the peer did wrong; the connection must close (with this as the reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message that does not parse.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// Data, abandon or close on a flow the peer never opened; an ack or close ack for a flow
    /// of ours that does not exist.
    #[error("unknown flow {0}")]
    UnknownFlow(u64),
    /// An open of a flow ID still in use.
    #[error("flow {0} is already open")]
    FlowInUse(u64),
    /// More flows than the configured limit.
    #[error("more than {0} flows")]
    TooManyFlows(usize),
    /// Data beyond the window this end advertised.
    #[error("flow {flow}: {sent} bytes beyond the acked position, {window} advertised")]
    WindowOverrun {
        /// The flow.
        flow: u64,
        /// Bytes the peer has in flight on it.
        sent: u64,
        /// The window advertised.
        window: u64,
    },
    /// A message growing past the configured limit, or partial messages on several flows
    /// together past it (a peer that never ends one).
    #[error("flow {flow}: a message of more than {limit} bytes")]
    MessageTooLarge {
        /// The flow.
        flow: u64,
        /// The limit.
        limit: usize,
    },
    /// An ack for bytes that were never sent.
    #[error("flow {flow}: ack of {acked} bytes, {sent} sent")]
    AckBeyondSent {
        /// The flow.
        flow: u64,
        /// Position the acks add up to.
        acked: u64,
        /// Bytes sent.
        sent: u64,
    },
}
