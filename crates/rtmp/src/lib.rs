//! onair's RTMP ingest: the server side of an RTMP connection from FFmpeg, OBS or any other
//! publisher, without IO. Bytes go in; bytes to send back and hub-ready tracks and frames come
//! out.
//!
//! The run loop, as the server drives it for one TCP connection:
//!
//! ```
//! use rtmp::{Event, Output, RtmpError, Session, SessionConfig};
//!
//! fn drive(session: &mut Session, read: &[u8], socket: &mut Vec<u8>) -> Result<(), RtmpError> {
//!     let result = session.handle_input(read);
//!     // Drain even after an error: the session may have queued a refusal for the client.
//!     while let Some(output) = session.poll_output() {
//!         match output {
//!             Output::Send(bytes) => socket.extend_from_slice(&bytes),
//!             Output::Event(Event::PublishRequested { request, app, key }) => {
//!                 // Check the stream key, ask the hub whether the name is free, then answer.
//!                 if key == "test" {
//!                     session.accept_publish(request)?;
//!                 } else {
//!                     session.reject_publish(request, &format!("{app}/{key} is not allowed"))?;
//!                 }
//!                 // Answers queue more output; this loop drains it.
//!             }
//!             Output::Event(Event::Tracks(tracks)) => { /* publisher.set_tracks(tracks) */ }
//!             Output::Event(Event::Frame(frame)) => { /* publisher.push(frame) */ }
//!             Output::Event(Event::PublishEnded) => { /* drop the hub publisher */ }
//!             Output::Event(_) => {}
//!         }
//!     }
//!     result // on Err: log it and close the connection
//! }
//!
//! let mut session = Session::new(SessionConfig::default());
//! let mut to_client = Vec::new();
//! let err = drive(&mut session, b"GET / HTTP/1.1\r\n", &mut to_client).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "RTMP handshake failed: expected RTMP version 3, got byte 0x47 (not an RTMP client?)"
//! );
//! ```
//!
//! The handshake and the encoding of our replies come from `rml_rtmp`. The incoming side
//! (chunk stream, AMF0 commands, FLV tags) is parsed here, with limits from
//! [`SessionConfig`], because a client controls every length in it. Two things are not pure:
//! `rml_rtmp`'s handshake fills its packets from the thread RNG, and no clock is read
//! (replies carry timestamp 0).
//!
//! Frames follow the hub's conventions: H.264/H.265 as 4-byte length-prefixed NAL units with
//! the `avcC`/`hvcC` in the track's config, AAC as raw access units with the
//! AudioSpecificConfig, times in microseconds on a continuous timeline.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod amf0;
mod chunk;
mod commands;
mod error;
pub mod flv;
pub mod flv_out;
mod ingest;
mod session;
pub mod tc;

pub use error::RtmpError;
pub use session::{RequestId, Session, SessionConfig};

/// What a [`Session`] produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes to write to the socket, in order.
    Send(Vec<u8>),
    /// Something for the server.
    Event(Event),
}

/// What happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The client wants to publish `app/key`; answer with [`Session::accept_publish`] or
    /// [`Session::reject_publish`]. Media is ignored until accepted.
    PublishRequested {
        /// Pass back in the answer.
        request: RequestId,
        /// The app from `connect` (`[A-Za-z0-9._-]+`).
        app: String,
        /// The stream name from `publish`, as sent (it may carry a `?query`).
        key: String,
    },
    /// Track list, emitted when it becomes known or changes; `Frame.track` indexes into it.
    /// At most one video and one audio track, in the order they first appeared.
    Tracks(Vec<hub::TrackInfo>),
    /// One access unit.
    Frame(hub::Frame),
    /// The client sent deleteStream/FCUnpublish or closed publishing (after an accepted
    /// publish only).
    PublishEnded,
}
