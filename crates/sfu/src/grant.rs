//! What a room member may do. The server checks the member's access token and hands the SFU
//! its grant before the `join` ([`Sfu::authorize`]); the SFU enforces it: the room it may
//! enter, the sources it may publish (an offer with another is refused whole, and a track of a
//! source it may not publish is never forwarded), whether it receives others' tracks, and
//! whether its data channel messages are relayed.

use crate::ids::ConnId;
use crate::sfu::Sfu;
use crate::signal::TrackSource;

/// A room member's rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The rooms it may join: a name, `prefix*`, or `*`.
    pub room: String,
    /// The sources it may publish; `None`: any.
    pub publish: Option<Vec<TrackSource>>,
    /// It receives others' tracks.
    pub subscribe: bool,
    /// Its data channel messages are relayed.
    pub data: bool,
    /// The others are not told of it (no `participant_joined`/`left`, not in their lists): an
    /// observer or a recorder. It cannot publish tracks or data.
    pub hidden: bool,
    /// Who the token was for (its `sub`), when there was one.
    pub identity: Option<String>,
    /// A room admin: it may remove members of its room and mute their tracks
    /// (`remove_participant`, `mute_track`).
    pub room_admin: bool,
}

impl Grant {
    /// Everything, in every room (what a member gets when auth is off).
    pub fn all() -> Grant {
        Grant {
            room: "*".into(),
            publish: None,
            subscribe: true,
            data: true,
            hidden: false,
            identity: None,
            room_admin: false,
        }
    }

    /// Whether it covers `room`.
    pub fn covers(&self, room: &str) -> bool {
        crate::config::matches_room(&self.room, room)
    }

    /// Whether it may publish `source`.
    pub fn may_publish(&self, source: TrackSource) -> bool {
        !self.hidden && self.publish.as_ref().is_none_or(|l| l.contains(&source))
    }

    /// Whether its data channel messages are relayed (never a hidden member's: they would
    /// give it away).
    pub fn may_send_data(&self) -> bool {
        self.data && !self.hidden
    }
}

impl Sfu {
    /// Whether `pid` is a hidden member (the others are not told of it).
    pub(crate) fn is_hidden(&self, pid: crate::ids::ParticipantId) -> bool {
        self.participants.get(&pid).is_some_and(|p| p.grant.hidden)
    }

    /// The grant of the member about to `join` on `conn` (from its verified token). With
    /// `SfuConfig::require_grant`, a `join` without one is refused.
    pub fn authorize(&mut self, conn: ConnId, grant: Grant) {
        if self.conns.contains_key(&conn) {
            self.conn_grants.insert(conn, grant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_sources() {
        let g = Grant {
            room: "team-*".into(),
            publish: Some(vec![TrackSource::Microphone]),
            subscribe: true,
            data: false,
            hidden: false,
            identity: None,
            room_admin: false,
        };
        assert!(g.covers("team-a") && !g.covers("teams") && !g.covers("x"));
        assert!(g.may_publish(TrackSource::Microphone) && !g.may_publish(TrackSource::Camera));
        assert!(Grant::all().covers("any") && Grant::all().may_publish(TrackSource::Screen));
        let hidden = Grant {
            hidden: true,
            ..Grant::all()
        };
        assert!(!hidden.may_publish(TrackSource::Microphone) && !hidden.may_send_data());
    }
}
