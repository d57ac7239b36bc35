//! Limits and timings of the SFU. The server maps its configuration file onto this.

use std::time::Duration;

use crate::signal::IceServer;

/// SFU settings.
#[derive(Debug, Clone)]
pub struct SfuConfig {
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
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            max_participants_per_room: 16,
            max_tracks_per_participant: 4,
            max_tracks_per_room: 64,
            max_data_bytes: 16 * 1024,
            max_signal_bytes: 64 * 1024,
            reconnect_grace: Duration::from_secs(20),
            keyframe_min_interval: Duration::from_millis(500),
            layer_inactive_after: Duration::from_secs(1),
            ice_servers: Vec::new(),
        }
    }
}
