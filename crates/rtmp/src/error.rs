//! The one error type of this crate. Every variant's `Display` is a sentence the server can
//! log and use as the close reason as it is.

use media::avc::AvcError;

/// Why a session (or a parse) failed. After an error from [`crate::Session`] the connection is
/// unusable: drain `poll_output` (it may hold a refusal for the client), then close it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtmpError {
    /// The first bytes were not an RTMP handshake (wrong version byte, bad packets).
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),

    /// A chunk broke the chunk-stream rules (e.g. a continuation with no message before it).
    #[error("bad RTMP chunk: {0}")]
    BadChunk(&'static str),

    /// The client announced a message larger than we accept.
    #[error("RTMP message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Announced size.
        size: u32,
        /// The configured limit.
        limit: u32,
    },

    /// SetChunkSize with a value outside `1..=limit`.
    #[error("client asked for chunk size {size}; accepted sizes are 1 to {limit} bytes")]
    BadChunkSize {
        /// The requested size.
        size: u32,
        /// The configured limit.
        limit: u32,
    },

    /// The client used more distinct chunk stream ids than we track.
    #[error("client used more than {limit} chunk streams")]
    TooManyChunkStreams {
        /// The configured limit.
        limit: usize,
    },

    /// Partial messages and unparsed input together passed the per-session limit.
    #[error("client made the session buffer more than {limit} bytes")]
    BufferLimit {
        /// The configured limit.
        limit: usize,
    },

    /// A control or command message could not be decoded.
    #[error("malformed RTMP message: {0}")]
    BadMessage(&'static str),

    /// The client broke the command sequence (publish before connect, second connect, ...).
    #[error("RTMP protocol violation: {0}")]
    Protocol(&'static str),

    /// The app name in `connect` is not `[A-Za-z0-9._-]+`.
    #[error("app name {0:?} is not allowed (use letters, digits, '.', '_' and '-')")]
    BadAppName(String),

    /// The client created more NetStreams than a publisher needs.
    #[error("client created more than {limit} streams on one connection")]
    TooManyStreams {
        /// The limit.
        limit: u32,
    },

    /// An audio or video tag body could not be parsed.
    #[error("malformed FLV tag: {0}")]
    MalformedTag(&'static str),

    /// An H.264 configuration record or access unit was malformed.
    #[error("malformed H.264 data: {0}")]
    Avc(#[from] AvcError),

    /// The publisher sent a codec we do not carry.
    #[error("unsupported codec {0}: publish H.264, H.265, AV1 or VP9 video and AAC or Opus audio")]
    UnsupportedCodec(String),

    /// The publisher used a protocol feature we do not implement.
    #[error("unsupported RTMP feature: {0}")]
    Unsupported(&'static str),

    /// `accept_publish`/`reject_publish` named a request that is not pending.
    #[error("no pending publish request {0}")]
    UnknownRequest(u32),

    /// Building an outgoing message failed (never expected; reported, not panicked on).
    #[error("could not encode an RTMP message: {0}")]
    Encode(String),
}
