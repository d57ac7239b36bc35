//! Peer-to-peer rooms: the server relays `signal` messages between members and refuses media
//! negotiation; the mode is the first member's (or config's), and a joiner asking for the other
//! mode is refused.

use std::time::Duration;

use sfu::SfuConfig;
use sfu::signal::{ClientMessage, ErrorCode, RoomMode, ServerMessage};
use testkit::{Link, Scenario};

fn join(s: &mut Scenario, idx: usize, room: &str, mode: Option<RoomMode>) {
    let ClientMessage::Join {
        room,
        name,
        token,
        auto_subscribe,
        resume,
        ..
    } = s.clients[idx].join_message(room)
    else {
        unreachable!("join_message makes a join");
    };
    s.signal(
        idx,
        ClientMessage::Join {
            room,
            name,
            token,
            auto_subscribe,
            resume,
            mode,
        },
    );
}

fn joined_mode(s: &Scenario, idx: usize) -> Option<RoomMode> {
    s.clients[idx].messages.iter().find_map(|m| match m {
        ServerMessage::Joined { mode, .. } => Some(*mode),
        _ => None,
    })
}

fn errors(s: &Scenario, idx: usize) -> Vec<ErrorCode> {
    s.clients[idx]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

fn signals(s: &Scenario, idx: usize) -> Vec<(String, serde_json::Value)> {
    s.clients[idx]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Signal { from, data } => Some((from.to_string(), data.clone())),
            _ => None,
        })
        .collect()
}

fn pid(s: &Scenario, idx: usize) -> sfu::ParticipantId {
    s.clients[idx]
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Joined { participant_id, .. } => Some(*participant_id),
            _ => None,
        })
        .expect("joined")
}

#[test]
fn signals_are_relayed_to_one_member_or_all_and_media_is_refused() {
    let mut s = Scenario::new(SfuConfig::default(), 3);
    for name in ["a", "b", "c"] {
        s.add_client(name, Link::clean());
    }
    join(&mut s, 0, "call", Some(RoomMode::P2p));
    join(&mut s, 1, "call", None);
    join(&mut s, 2, "call", Some(RoomMode::P2p));
    assert_eq!(joined_mode(&s, 0), Some(RoomMode::P2p));
    assert_eq!(
        joined_mode(&s, 1),
        Some(RoomMode::P2p),
        "the room's mode, not asked"
    );
    let (a, b) = (pid(&s, 0), pid(&s, 1));

    let offer = serde_json::json!({"description": {"type": "offer", "sdp": "v=0..."}});
    s.signal(
        0,
        ClientMessage::Signal {
            to: Some(b),
            data: offer.clone(),
        },
    );
    assert_eq!(signals(&s, 1), [(a.to_string(), offer)]);
    assert!(signals(&s, 2).is_empty(), "only the addressee gets it");

    let tracks = serde_json::json!({"tracks": []});
    s.signal(
        1,
        ClientMessage::Signal {
            to: None,
            data: tracks.clone(),
        },
    );
    assert_eq!(signals(&s, 0), [(b.to_string(), tracks.clone())]);
    assert_eq!(signals(&s, 2), [(b.to_string(), tracks)]);
    assert!(signals(&s, 1).len() == 1, "not echoed to the sender");

    // The SFU's media messages do not apply, and nothing was set up for media.
    s.signal(
        0,
        ClientMessage::Offer {
            sdp: "v=0".into(),
            tracks: Vec::new(),
        },
    );
    s.signal(
        0,
        ClientMessage::Signal {
            to: Some(a),
            data: serde_json::json!(1),
        },
    );
    assert_eq!(errors(&s, 0), [ErrorCode::WrongMode, ErrorCode::BadRequest]);
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.sfu.track_count(), 0);
}

#[test]
fn the_mode_is_the_first_members_or_configs() {
    let config = SfuConfig {
        p2p_rooms: vec!["direct-*".into()],
        max_participants_per_p2p_room: 2,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 4);
    for name in ["a", "b", "c", "d"] {
        s.add_client(name, Link::clean());
    }
    join(&mut s, 0, "meeting", None);
    join(&mut s, 1, "meeting", Some(RoomMode::P2p));
    assert_eq!(joined_mode(&s, 0), Some(RoomMode::Sfu));
    assert_eq!(errors(&s, 1), [ErrorCode::WrongMode]);

    join(&mut s, 1, "direct-42", None);
    join(&mut s, 2, "direct-42", Some(RoomMode::P2p));
    join(&mut s, 3, "direct-42", None);
    assert_eq!(joined_mode(&s, 1), Some(RoomMode::P2p));
    assert_eq!(joined_mode(&s, 2), Some(RoomMode::P2p));
    assert_eq!(
        errors(&s, 3),
        [ErrorCode::RoomFull],
        "two is the p2p limit here"
    );
    // Signals are for p2p rooms only.
    s.signal(
        0,
        ClientMessage::Signal {
            to: None,
            data: serde_json::json!({}),
        },
    );
    assert_eq!(errors(&s, 0), [ErrorCode::WrongMode]);
}

#[test]
fn with_tokens_the_first_joiner_does_not_choose_the_mode() {
    let config = SfuConfig {
        p2p_rooms: vec!["direct-*".into()],
        require_grant: true,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 3);
    for name in ["a", "b", "c"] {
        s.add_client(name, Link::clean());
    }
    for i in 0..3 {
        let conn = s.clients[i].conn;
        s.sfu.authorize(conn, sfu::Grant::all());
    }
    // Asking for a mesh in a room config does not name: refused, the room stays an SFU room.
    join(&mut s, 0, "meeting", Some(RoomMode::P2p));
    assert_eq!(errors(&s, 0), [ErrorCode::WrongMode]);
    join(&mut s, 1, "meeting", None);
    assert_eq!(joined_mode(&s, 1), Some(RoomMode::Sfu));
    // Config still makes p2p rooms.
    join(&mut s, 2, "direct-1", None);
    assert_eq!(joined_mode(&s, 2), Some(RoomMode::P2p));
}
