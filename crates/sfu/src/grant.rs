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
}

impl Grant {
    /// Everything, in every room (what a member gets when auth is off).
    pub fn all() -> Grant {
        Grant {
            room: "*".into(),
            publish: None,
            subscribe: true,
            data: true,
        }
    }

    /// Whether it covers `room`.
    pub fn covers(&self, room: &str) -> bool {
        crate::config::matches_room(&self.room, room)
    }

    /// Whether it may publish `source`.
    pub fn may_publish(&self, source: TrackSource) -> bool {
        self.publish.as_ref().is_none_or(|l| l.contains(&source))
    }
}

impl Sfu {
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
        };
        assert!(g.covers("team-a") && !g.covers("teams") && !g.covers("x"));
        assert!(g.may_publish(TrackSource::Microphone) && !g.may_publish(TrackSource::Camera));
        assert!(Grant::all().covers("any") && Grant::all().may_publish(TrackSource::Screen));
    }
}
