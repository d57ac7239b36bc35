//! onair's embedded STUN/TURN server, sans-IO.
//!
//! RFC 8656 itself (allocations, permissions, channels, nonces and lifetimes) comes from
//! `turn-server-proto`. This crate adds what a media server's TURN needs on top:
//! - [`credentials`]: static users and coturn-compatible time-limited (REST API) credentials;
//! - [`policy`]: the peers a relay may reach (no SSRF into loopback, private networks or
//!   onair's own service ports);
//! - quotas per user and per server, and a bandwidth cap per allocation ([`limiter`]);
//! - counters for every relay and every refusal ([`TurnStats`]);
//! - a fast path for ChannelData on bound channels (`channels`), the media path, which
//!   bypasses the library once it has granted the binding.
//!
//! The IO layer (crates/server) owns the sockets and hands relayed traffic for the SFU to it
//! in-process.

mod channels;
mod core;
pub mod credentials;
pub mod limiter;
pub mod policy;
mod stun;

pub use crate::core::{Output, Refused, Transmit, Transport, Turn, TurnConfig, TurnStats};
pub use credentials::{CredentialError, Credentials, Issued};
pub use policy::{PeerPolicy, Refusal};
