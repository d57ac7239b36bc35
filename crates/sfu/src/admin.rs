//! What the operator's API does to rooms (issue 19): remove a participant, end a room, mute a
//! published track server-side, change a participant's grant while it is in the room. The
//! server checks the admin token; these act.

use std::time::Instant;

use tracing::info;

use crate::grant::Grant;
use crate::ids::{ParticipantId, RoomName, TrackId};
use crate::sfu::{Output, Role, Sfu};
use crate::signal::{LeaveReason, ServerMessage, TrackSource};

/// Why an admin action could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No room by that name is open.
    #[error("no room named '{0}'")]
    NoRoom(String),
    /// No member by that id in that room.
    #[error("no participant {0} in room '{1}'")]
    NoParticipant(String, String),
    /// No track by that id in that room.
    #[error("no track {0} in room '{1}'")]
    NoTrack(String, String),
}

/// A change to a member's grant; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantUpdate {
    /// The sources it may publish from now on (`[]`: none). Tracks of other sources it
    /// publishes now are unpublished.
    pub publish: Option<Vec<TrackSource>>,
    /// Whether it receives the others' tracks (tracks it receives now stop when false).
    pub subscribe: Option<bool>,
    /// Whether its data channel messages are relayed.
    pub data: Option<bool>,
}

impl Sfu {
    /// The member `pid` of `room`, checked.
    fn member_of(&self, room: &str, pid: ParticipantId) -> Result<(), AdminError> {
        let room_name = RoomName::parse(room).map_err(|_| AdminError::NoRoom(room.to_owned()))?;
        if !self.rooms.contains_key(&room_name) {
            return Err(AdminError::NoRoom(room.to_owned()));
        }
        match self.participants.get(&pid) {
            Some(p) if p.room == room_name && matches!(p.role, Role::Member) => Ok(()),
            _ => Err(AdminError::NoParticipant(pid.to_string(), room.to_owned())),
        }
    }

    /// Removes `pid` from `room`: it is told (`bye` with reason `kicked`) and its socket
    /// closed; the others see `participant_left` with that reason.
    pub fn kick(&mut self, now: Instant, room: &str, pid: ParticipantId) -> Result<(), AdminError> {
        self.now = now;
        self.member_of(room, pid)?;
        info!(participant = %pid, room, "removed by the operator");
        self.evict(pid, LeaveReason::Kicked);
        Ok(())
    }

    /// Ends `room`: every member is removed as by [`Sfu::kick`]. Returns how many were.
    pub fn end_room(&mut self, now: Instant, room: &str) -> Result<usize, AdminError> {
        self.now = now;
        let room_name = RoomName::parse(room).map_err(|_| AdminError::NoRoom(room.to_owned()))?;
        let members = self
            .rooms
            .get(&room_name)
            .map(|r| r.participants.clone())
            .ok_or_else(|| AdminError::NoRoom(room.to_owned()))?;
        info!(room, members = members.len(), "room ended by the operator");
        for pid in &members {
            self.evict(*pid, LeaveReason::Kicked);
        }
        Ok(members.len())
    }

    /// Says goodbye to `pid` on its socket, closes it, and removes it.
    fn evict(&mut self, pid: ParticipantId, reason: LeaveReason) {
        if let Some(conn) = self.participants.get(&pid).and_then(|p| p.conn()) {
            self.out
                .push_back(Output::Signal(conn, ServerMessage::Bye { reason }));
            self.out.push_back(Output::Close(conn));
            self.conns.remove(&conn);
        }
        self.remove_participant(pid, reason);
    }

    /// Mutes (or unmutes) `track` of `room` for everyone: the server stops forwarding it (to
    /// members, WHEP viewers, recordings and LL-HLS) until unmuted, and every member, its
    /// owner included, gets `track_muted` with `by_server`.
    pub fn server_mute(
        &mut self,
        now: Instant,
        room: &str,
        track: TrackId,
        muted: bool,
    ) -> Result<(), AdminError> {
        self.now = now;
        let room_name = RoomName::parse(room).map_err(|_| AdminError::NoRoom(room.to_owned()))?;
        if !self.rooms.contains_key(&room_name) {
            return Err(AdminError::NoRoom(room.to_owned()));
        }
        let no_track = || AdminError::NoTrack(track.to_string(), room.to_owned());
        let owner = self
            .tracks
            .get(&track)
            .map(|t| t.owner)
            .ok_or_else(no_track)?;
        if self
            .participants
            .get(&owner)
            .is_none_or(|p| p.room != room_name)
        {
            return Err(no_track());
        }
        let Some(t) = self.tracks.get_mut(&track) else {
            return Err(no_track());
        };
        let was = t.server_muted;
        t.server_muted = muted;
        let layers = t.layers.len().max(1);
        info!(%track, muted, "track muted by the operator");
        let msg = ServerMessage::TrackMuted {
            participant_id: owner,
            track_id: track,
            muted,
            by_server: true,
        };
        // The owner too: its page says the server muted it.
        self.broadcast_all(&room_name, &msg);
        if was && !muted {
            // Subscribers start again at a keyframe.
            for layer in 0..layers {
                self.request_keyframe(track, layer);
            }
        }
        Ok(())
    }

    /// Changes `pid`'s grant while it is in `room`: what it may publish (tracks of sources no
    /// longer granted are unpublished), whether it receives, whether its data is relayed. The
    /// member is told nothing beyond the effects (tracks leaving, `error` `forbidden` on what
    /// it tries next).
    pub fn update_grant(
        &mut self,
        now: Instant,
        room: &str,
        pid: ParticipantId,
        update: GrantUpdate,
    ) -> Result<Grant, AdminError> {
        self.now = now;
        self.member_of(room, pid)?;
        let Some(p) = self.participants.get_mut(&pid) else {
            return Err(AdminError::NoParticipant(pid.to_string(), room.to_owned()));
        };
        if let Some(publish) = update.publish {
            p.grant.publish = Some(publish);
        }
        if let Some(subscribe) = update.subscribe {
            p.grant.subscribe = subscribe;
        }
        if let Some(data) = update.data {
            p.grant.data = data;
        }
        let grant = p.grant.clone();
        // Its tracks of sources it may no longer publish go.
        let gone: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.owner == pid && !grant.may_publish(t.source))
            .map(|(id, _)| *id)
            .collect();
        for t in gone {
            self.unpublish(t);
        }
        if !grant.subscribe {
            let subs: Vec<TrackId> = self
                .participants
                .get(&pid)
                .map(|p| p.subs.keys().copied().collect())
                .unwrap_or_default();
            for t in subs {
                self.unsubscribe(pid, t);
            }
            if let Some(s) = self.signalling_mut(pid) {
                s.auto_subscribe = false;
            }
            self.negotiate(pid);
        }
        info!(participant = %pid, room, ?grant, "grant changed by the operator");
        Ok(grant)
    }

    /// Sends `msg` to every member of `room`.
    pub(crate) fn broadcast_all(&mut self, room: &RoomName, msg: &ServerMessage) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for pid in &r.participants {
            if let Some(conn) = self.participants.get(pid).and_then(|p| p.conn()) {
                self.out.push_back(Output::Signal(conn, msg.clone()));
            }
        }
    }
}
