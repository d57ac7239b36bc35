//! The signalling protocol spoken on `/rtc`: every message both ways, as serde types.
//! `docs/signalling.md` is the user-facing description; keep the two in step.

use serde::{Deserialize, Serialize};

use crate::ids::{ParticipantId, TrackId};

/// Which of a participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcKind {
    /// The client offers; carries the client's own tracks and the data channels.
    Publisher,
    /// The server offers; carries everyone else's tracks.
    Subscriber,
}

/// What a published track shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// A camera.
    Camera,
    /// A microphone.
    Microphone,
    /// A shared screen or window.
    Screen,
    /// The audio of a shared tab.
    ScreenAudio,
    /// A client that did not say.
    Unknown,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// How a room carries media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Through the SFU (the default).
    #[default]
    Sfu,
    /// Browser to browser: the server relays only signalling (`signal`) and hands out
    /// STUN/TURN; media goes directly, or through onair's TURN when a direct path fails.
    P2p,
}

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Enter a room (or take one's place back with `resume`).
    Join {
        /// Room name.
        room: String,
        /// Display name.
        name: String,
        /// Access token (a JWT): required when the server has keys configured.
        #[serde(default)]
        token: Option<String>,
        /// Subscribe to every track automatically.
        #[serde(default = "yes")]
        auto_subscribe: bool,
        /// A `resume_token` from an earlier `joined`.
        #[serde(default)]
        resume: Option<String>,
        /// The mode asked for; the room's first member decides (config may fix it).
        #[serde(default)]
        mode: Option<RoomMode>,
    },
    /// P2P rooms: an opaque message for one other member (`to`), or for all of them.
    Signal {
        /// The member it is for; absent: every other member.
        #[serde(default)]
        to: Option<ParticipantId>,
        /// Anything (an SDP, a candidate, a track list): relayed as it is.
        data: serde_json::Value,
    },
    /// An offer on the publisher connection.
    Offer {
        /// The SDP.
        sdp: String,
        /// What each sending m-line carries.
        #[serde(default)]
        tracks: Vec<PublishTrack>,
    },
    /// The answer to the server's subscriber offer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// Which connection it belongs to.
        pc: PcKind,
        /// `candidate:…` line; empty or absent means end of candidates.
        #[serde(default)]
        candidate: Option<String>,
        /// The m-line's mid (informational: the server bundles everything).
        #[serde(default)]
        sdp_mid: Option<String>,
    },
    /// Subscribe to tracks, or change the layer cap of a subscription.
    Subscribe {
        /// The tracks.
        tracks: Vec<SubscribeTrack>,
    },
    /// Stop receiving tracks.
    Unsubscribe {
        /// The tracks.
        track_ids: Vec<TrackId>,
    },
    /// Tell the room a track is (un)muted.
    Mute {
        /// The client's own track.
        track_id: TrackId,
        /// Muted or not.
        muted: bool,
    },
    /// Stop publishing a track.
    Unpublish {
        /// The client's own track.
        track_id: TrackId,
    },
    /// Ask for an ICE restart on the subscriber connection.
    RestartIce,
    /// Keep-alive.
    Ping,
    /// Leave the room.
    Leave,
    /// A room admin (its token's `room.admin`) removes another member of its room.
    RemoveParticipant {
        /// The member.
        participant_id: ParticipantId,
    },
    /// A room admin mutes (or unmutes) a track of its room for everyone, as the operator's
    /// API does.
    MuteTrack {
        /// The track.
        track_id: TrackId,
        /// Muted or not.
        muted: bool,
    },
}

fn yes() -> bool {
    true
}

/// A client's description of one m-line it sends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishTrack {
    /// The transceiver's mid.
    pub mid: String,
    /// What it shows.
    pub source: TrackSource,
    /// Width of the best layer.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height of the best layer.
    #[serde(default)]
    pub height: Option<u32>,
    /// Simulcast RIDs, lowest layer first.
    #[serde(default)]
    pub simulcast: Option<Vec<String>>,
}

/// One track in a `subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeTrack {
    /// The track.
    pub track_id: TrackId,
    /// Cap on the forwarded layer's height; none means the best layer.
    #[serde(default)]
    pub max_height: Option<u32>,
}

/// A message to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded.
    Joined {
        /// Room name.
        room: String,
        /// The joiner's id.
        participant_id: ParticipantId,
        /// Presents this to `join` as `resume` after a dropped socket.
        resume_token: String,
        /// Everyone else in the room.
        participants: Vec<ParticipantInfo>,
        /// For `new RTCPeerConnection({iceServers})`.
        ice_servers: Vec<IceServer>,
        /// Limits that apply to this client.
        limits: Limits,
        /// `sfu`, or `p2p`: connect to each other member directly, using `signal`.
        mode: RoomMode,
    },
    /// P2P rooms: a `signal` from another member.
    Signal {
        /// Its sender.
        from: ParticipantId,
        /// As sent.
        data: serde_json::Value,
    },
    /// The answer on the publisher connection.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// An offer on the subscriber connection.
    Offer {
        /// The SDP.
        sdp: String,
        /// Which m-line carries which track.
        tracks: Vec<OfferTrack>,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left.
    ParticipantLeft {
        /// Who.
        participant_id: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// A track appeared.
    TrackPublished {
        /// The track.
        track: TrackInfo,
    },
    /// A track went away.
    TrackUnpublished {
        /// Its publisher.
        participant_id: ParticipantId,
        /// The track.
        track_id: TrackId,
    },
    /// A track was (un)muted.
    TrackMuted {
        /// Its publisher.
        participant_id: ParticipantId,
        /// The track.
        track_id: TrackId,
        /// Muted or not.
        muted: bool,
        /// The operator muted it (the server forwards nothing of it until unmuted); its owner
        /// gets this too.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_server: bool,
    },
    /// The server stopped (or started again) sending a video track to this subscriber: its
    /// connection's estimated bandwidth carries no layer of it. Audio is never paused.
    TrackPaused {
        /// The track.
        track_id: TrackId,
        /// Paused or sending again.
        paused: bool,
        /// Why.
        reason: PauseReason,
    },
    /// To a simulcast publisher: the layers of its track anyone receives, by RID, lowest
    /// first. It may pause the others (the SDK sets their encodings inactive) until a later
    /// `layers_needed` lists them again.
    LayersNeeded {
        /// The publisher's track.
        track_id: TrackId,
        /// The RIDs to keep sending.
        rids: Vec<String>,
    },
    /// A participant's connection quality changed (sent to everyone in the room, the
    /// participant included).
    ConnectionQuality {
        /// Whose.
        participant_id: ParticipantId,
        /// Now.
        quality: Quality,
    },
    /// Who is speaking now, loudest first (sent to everyone in the room when the set of
    /// speakers or the loudest changes; empty when no one speaks).
    ActiveSpeakers {
        /// The speakers.
        speakers: Vec<SpeakerLevel>,
    },
    /// Something the client sent was refused.
    Error {
        /// A stable code (see docs/signalling.md).
        code: ErrorCode,
        /// What happened, for people.
        message: String,
    },
    /// Answers `ping`.
    Pong,
    /// The server is closing this socket.
    Bye {
        /// Why.
        reason: LeaveReason,
    },
}

/// Why a track is paused for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// The subscriber's downlink, as estimated, carries audio but not the lowest video layer.
    Bandwidth,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Id.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// Published tracks.
    pub tracks: Vec<TrackInfo>,
    /// How its connection is doing, once known (see `connection_quality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
}

/// How a participant's connection is doing: the worst of its connections, graded from round
/// trip, jitter and loss (see docs/quality.md). Ordered worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Nothing heard from it for seconds, or ICE lost its path.
    Lost,
    /// Noticeable: frozen video, broken audio likely.
    Poor,
    /// Some loss or delay, mostly unnoticed.
    Good,
    /// Nothing to notice.
    Excellent,
}

/// A published track as others see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Id.
    pub id: TrackId,
    /// Publisher.
    pub participant_id: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// What it shows.
    pub source: TrackSource,
    /// Muted by its publisher.
    pub muted: bool,
    /// Codec name once media flows.
    pub codec: Option<String>,
    /// Simulcast RIDs, lowest first; empty when not simulcast.
    pub simulcast: Vec<String>,
    /// Declared width of the best layer.
    pub width: Option<u32>,
    /// Declared height of the best layer.
    pub height: Option<u32>,
}

/// One m-line of a subscriber offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferTrack {
    /// The m-line's mid.
    pub mid: String,
    /// The track it carries.
    pub track_id: TrackId,
    /// The track's publisher.
    pub participant_id: ParticipantId,
}

/// An `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`/`turn:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Limits told to a client at join.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest data channel message relayed.
    pub max_data_bytes: usize,
    /// Largest signalling frame accepted.
    pub max_signal_bytes: usize,
    /// Tracks one participant may publish.
    pub max_tracks_per_participant: usize,
    /// Seconds a dropped socket may take to `resume`.
    pub reconnect_grace_secs: u64,
}

/// Why a participant left or a socket is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its socket stayed gone past the grace period, or its media died.
    Timeout,
    /// Removed by the server.
    Kicked,
    /// The server is stopping.
    ServerShutdown,
}

/// Stable error codes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a known message.
    BadJson,
    /// Frame over `max_signal_bytes`.
    TooLarge,
    /// A message before `join`.
    NotJoined,
    /// A second `join` on one socket.
    AlreadyJoined,
    /// A field out of range.
    BadRequest,
    /// The room is full.
    RoomFull,
    /// Too many tracks.
    TooManyTracks,
    /// SDP could not be parsed or negotiated.
    BadSdp,
    /// Unknown or expired resume token.
    ResumeFailed,
    /// The room is in the other mode (`sfu` vs `p2p`), or the message does not apply to it.
    WrongMode,
    /// A data channel message was too large to relay.
    DataTooLarge,
    /// The server failed.
    Internal,
    /// No access token, or one that is not valid (expired, wrong signature, unknown key).
    Unauthorized,
    /// The access token does not grant this (another room, a source it may not publish,
    /// subscribing, data).
    Forbidden,
    /// The socket sent more than its share (`limits.signal_bytes_per_second`); the message
    /// was dropped unread.
    RateLimited,
}

/// Why a signalling frame could not be turned into a [`ClientMessage`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than allowed; it was not parsed.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Frame size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON, not an object, unknown `type`, or wrong fields.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl DecodeError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::Json(_) => ErrorCode::BadJson,
        }
    }
}

/// Parses one signalling frame, refusing frames over `limit` bytes before looking inside.
pub fn decode(frame: &[u8], limit: usize) -> Result<ClientMessage, DecodeError> {
    if frame.len() > limit {
        return Err(DecodeError::TooLarge {
            size: frame.len(),
            limit,
        });
    }
    Ok(serde_json::from_slice(frame)?)
}

impl ServerMessage {
    /// The message as a JSON text frame.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no foreign types.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","code":"internal","message":"encode: {e}"}}"#)
        })
    }

    /// Shorthand for an error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_with_defaults() {
        let m = decode(br#"{"type":"join","room":"a","name":"b"}"#, 1000).unwrap();
        assert_eq!(
            m,
            ClientMessage::Join {
                room: "a".into(),
                name: "b".into(),
                token: None,
                auto_subscribe: true,
                resume: None,
                mode: None,
            }
        );
    }

    #[test]
    fn offer_with_tracks() {
        let m = decode(
            br#"{"type":"offer","sdp":"v=0","tracks":[{"mid":"1","source":"camera","height":720,"simulcast":["q","h","f"]}]}"#,
            1000,
        )
        .unwrap();
        let ClientMessage::Offer { tracks, .. } = m else {
            panic!("not an offer: {m:?}")
        };
        assert_eq!(tracks[0].source, TrackSource::Camera);
        assert_eq!(tracks[0].height, Some(720));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for frame in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"type":"nope"}"#,
            br#"{"type":"join"}"#,
            br#"{"type":"mute","track_id":"PA_1","muted":true}"#,
            b"\xff\xfe",
        ] {
            let e = decode(frame, 1000).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadJson, "{frame:?}");
        }
        let big = vec![b' '; 1001];
        assert_eq!(decode(&big, 1000).unwrap_err().code(), ErrorCode::TooLarge);
    }

    #[test]
    fn server_messages_encode_with_type_tags() {
        let j = ServerMessage::error(ErrorCode::RoomFull, "full").to_json();
        assert_eq!(j, r#"{"type":"error","code":"room_full","message":"full"}"#);
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
    }
}

/// One active speaker: who, and how loud (the mean amplitude of its voice, 0 to 1, smoothed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerLevel {
    /// Who.
    pub participant_id: ParticipantId,
    /// How loud, 0 to 1 (0.1 is -20 dBov, loud speech; 0.01 is -40 dBov, quiet speech).
    pub level: f32,
}
