//! onair's selective forwarding unit, sans-IO.
//!
//! Rooms of participants; each participant has two str0m peer connections in RTP mode: a
//! *publisher* connection the client offers on (its tracks and the data channels) and a
//! *subscriber* connection the server offers on (everyone else's tracks). RTP is forwarded
//! without depacketizing; each subscriber's leg of a track rewrites SSRC, sequence numbers and
//! timestamps so layer switches and publisher restarts look like one stream.
//!
//! The SFU reads no clock and opens no socket. Its driver owns both:
//!
//! ```no_run
//! # use std::time::Instant;
//! # use sfu::{Sfu, SfuConfig, Output};
//! # let mut sfu = Sfu::new(SfuConfig::default(), vec![], 1, Instant::now());
//! loop {
//!     // 1. Feed one input: a datagram, a signalling message, or the time.
//!     sfu.handle_timeout(Instant::now());
//!     // 2. Drain outputs until the SFU says when it next needs the time.
//!     let deadline = loop {
//!         match sfu.poll_output() {
//!             Output::Transmit(t) => { /* send t.contents to t.destination */ }
//!             Output::Signal(conn, msg) => { /* send msg.to_json() on conn */ }
//!             Output::Close(conn) => { /* close conn */ }
//!             Output::Event(e) => { /* mirror in the hub, end HTTP sessions */ }
//!             // With several shards (`mirror`): to the shard each names.
//!             Output::MirrorKeyframe { .. }
//!             | Output::MirrorClosed { .. }
//!             | Output::ExportEnded { .. }
//!             | Output::Announced { .. } => {}
//!             Output::Timeout(t) => break t,
//!         }
//!     };
//!     // With several shards: packets of exported streams, to the shards they name.
//!     for (shard, packet) in sfu.take_exports() { /* a batch per shard */ }
//!     // 3. Wait for the next datagram, message or `deadline`.
//! #   let _ = deadline; break;
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod allocate;
mod bandwidth;
mod codec;
mod config;
mod congestion;
pub mod depacketize;
mod dynacast;
pub mod forward;
mod grant;
mod hub_source;
pub mod ids;
mod keyframe;
mod media;
pub mod mirror;
mod negotiate;
mod packetize;
pub mod quality;
pub mod red;
pub mod report;
pub mod sdp;
mod session;
mod sfu;
pub mod shard;
pub mod signal;
pub mod speaker;
mod vp8;
mod whip;

pub use config::SfuConfig;
pub use grant::Grant;
pub use ids::{ConnId, ParticipantId, PeerId, RoomName, TrackId};
pub use sfu::{Output, Sfu, SfuEvent, SfuStats};
pub use shard::{OpenRooms, ShardPlace, shard_of};
pub use str0m;
pub use whip::{FrameTrack, HttpSession, HttpSessionError};
