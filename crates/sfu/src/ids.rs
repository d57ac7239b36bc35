//! Identifiers. Numbers inside, prefixed strings on the wire (`PA_3`, `TR_7`) so a log line or a
//! JSON message says what kind of thing it names.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                s.strip_prefix($prefix)
                    .and_then(|n| n.parse().ok())
                    .map($name)
                    .ok_or(())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(|()| {
                    serde::de::Error::custom(concat!("expected an id like ", $prefix, "1"))
                })
            }
        }
    };
}

prefixed_id!(
    /// A participant in a room, unique for the life of the server.
    ParticipantId,
    "PA_"
);
prefixed_id!(
    /// A published track, unique for the life of the server.
    TrackId,
    "TR_"
);

/// One signalling connection (a WebSocket). A participant is bound to at most one at a time; a
/// resumed participant moves to a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// One `Rtc` (peer connection) inside the SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// A room's name: 1–64 characters of `[A-Za-z0-9._-]`, checked at construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RoomName(String);

impl RoomName {
    /// Parses a room name, refusing anything outside the allowed alphabet or length.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() || s.len() > 64 {
            return Err("room name must be 1-64 characters");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("room name may only contain A-Z a-z 0-9 . _ -");
        }
        Ok(RoomName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name no client can choose (it holds a ':'), for the lone participants of HTTP
    /// (WHIP/WHEP) sessions, which belong to no room.
    pub(crate) fn internal(label: String) -> Self {
        RoomName(label)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        assert_eq!(ParticipantId(3).to_string(), "PA_3");
        assert_eq!("TR_12".parse::<TrackId>(), Ok(TrackId(12)));
        assert!("PA_12".parse::<TrackId>().is_err());
        assert!("TR_".parse::<TrackId>().is_err());
        let json = serde_json::to_string(&TrackId(5)).unwrap();
        assert_eq!(json, "\"TR_5\"");
        assert_eq!(serde_json::from_str::<TrackId>(&json).unwrap(), TrackId(5));
    }

    #[test]
    fn room_names_are_checked() {
        assert!(RoomName::parse("standup-1.a_b").is_ok());
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse("a/b").is_err());
        assert!(RoomName::parse("..x y").is_err());
        assert!(RoomName::parse(&"a".repeat(65)).is_err());
    }
}
