//! Limits and timings of the SFU. The server maps its configuration file onto this.

use std::time::Duration;

use crate::signal::IceServer;

/// SFU settings.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Rooms open at once: a join that would open one more is refused (`room_full`).
    pub max_rooms: usize,
    /// Participants in one room.
    pub max_participants_per_room: usize,
    /// Tracks one participant may publish (camera, microphone, screen, screen audio …).
    pub max_tracks_per_participant: usize,
    /// Tracks published in one room.
    pub max_tracks_per_room: usize,
    /// Largest data channel message relayed.
    pub max_data_bytes: usize,
    /// Largest signalling frame accepted.
    pub max_signal_bytes: usize,
    /// How long a participant whose signalling socket dropped keeps its place (and its media).
    pub reconnect_grace: Duration,
    /// Keyframe requests for one layer closer together than this are merged.
    pub keyframe_min_interval: Duration,
    /// A simulcast layer with no packets for this long is treated as paused.
    pub layer_inactive_after: Duration,
    /// ICE servers handed to clients in `joined`.
    pub ice_servers: Vec<IceServer>,
    /// Room names that are always peer-to-peer; a trailing `*` matches a prefix.
    pub p2p_rooms: Vec<String>,
    /// Participants in one peer-to-peer room (each sends to every other: a mesh).
    pub max_participants_per_p2p_room: usize,
    /// A WHIP publisher that would send VP8 but offers H.264 too is answered with H.264 first,
    /// so its stream can be packaged as fMP4 (LL-HLS, recording), which VP8 cannot go into.
    pub whip_prefer_h264: bool,
    /// Besides the highest layer being sent, reassemble every lower simulcast layer of a
    /// video track for the hub (`SfuEvent::Frame` with a layer), so that HLS can offer one
    /// variant per layer. It costs a reassembly per layer, so it is on only when HLS is.
    pub hub_layers: bool,
    /// Estimate each subscriber connection's downlink (str0m's send-side BWE) and cap its
    /// video layers at what the estimate carries (the stream allocator, bandwidth.rs): room
    /// subscribers, and WHEP viewers of a stream with layers to choose between. On by default;
    /// off forwards whatever layer each subscriber asks for (`max_height`), whatever its link.
    pub bandwidth_allocation: bool,
    /// Tell each room member publishing simulcast which of its layers anyone receives, so
    /// that it pauses the others (dynacast.rs; the SDK acts on it). On by default.
    pub dynacast: bool,
    /// Ask publishers (room members and WHIP) for Opus DTX: no audio packets but one every
    /// 400 ms while the microphone is silent (sdp.rs, `request_opus_dtx`). On by default.
    pub opus_dtx: bool,
    /// A `join` needs a grant ([`crate::Sfu::authorize`]): the server verified an access token
    /// for it. Off (auth off): every member may do everything.
    pub require_grant: bool,
    /// This SFU's shard among the server's media shards: the rooms it owns, the ids it gives.
    pub shard: crate::shard::ShardPlace,
    /// Rooms open on all shards (shared by their configs), checked against `max_rooms`.
    pub open_rooms: crate::shard::OpenRooms,
}

impl SfuConfig {
    /// Whether config makes `room` peer-to-peer.
    pub fn is_p2p_room(&self, room: &str) -> bool {
        self.p2p_rooms.iter().any(|p| matches_room(p, room))
    }
}

/// A room pattern: a name, or a prefix followed by `*` (`*` alone: every room). Used by
/// `rooms.p2p_rooms` and by access grants.
pub(crate) fn matches_room(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            max_rooms: 10_000,
            max_participants_per_room: 16,
            max_tracks_per_participant: 4,
            max_tracks_per_room: 64,
            max_data_bytes: 16 * 1024,
            max_signal_bytes: 64 * 1024,
            reconnect_grace: Duration::from_secs(20),
            keyframe_min_interval: Duration::from_millis(500),
            layer_inactive_after: Duration::from_secs(1),
            ice_servers: Vec::new(),
            p2p_rooms: Vec::new(),
            max_participants_per_p2p_room: 6,
            whip_prefer_h264: false,
            hub_layers: false,
            bandwidth_allocation: true,
            dynacast: true,
            opus_dtx: true,
            require_grant: false,
            shard: Default::default(),
            open_rooms: Default::default(),
        }
    }
}
