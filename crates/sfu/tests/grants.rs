//! Access grants and server-wide limits the SFU acts on (tokens are checked by the server; the
//! SFU gets the grant):
//! a hidden member is not told to the others and cannot publish, but receives.

use std::time::Duration;

use sfu::signal::{ErrorCode, ServerMessage};
use sfu::{Grant, SfuConfig};
use testkit::{Link, Publish, Scenario};

fn joined_others(s: &Scenario, idx: usize) -> Vec<String> {
    s.clients[idx]
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Joined { participants, .. } => {
                Some(participants.iter().map(|p| p.name.clone()).collect())
            }
            _ => None,
        })
        .expect("joined")
}

fn count(s: &Scenario, idx: usize, f: impl Fn(&ServerMessage) -> bool) -> usize {
    s.clients[idx].messages.iter().filter(|m| f(m)).count()
}

#[test]
fn a_hidden_member_is_not_told_to_the_others_cannot_publish_but_receives() {
    let config = SfuConfig {
        require_grant: true,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 7);
    let host = s.add_client("host", Link::clean());
    let observer = s.add_client("observer", Link::clean());
    let late = s.add_client("late", Link::clean());
    let hidden = Grant {
        hidden: true,
        ..Grant::all()
    };
    for (idx, g) in [
        (host, Grant::all()),
        (observer, hidden),
        (late, Grant::all()),
    ] {
        let conn = s.clients[idx].conn;
        s.sfu.authorize(conn, g);
    }
    let camera = Publish {
        video: true,
        audio: true,
        simulcast: false,
    };
    s.clients[host].publish = Some(camera);
    s.clients[observer].publish = Some(camera);
    s.join(host, "r");
    s.run_for(Duration::from_secs(2));
    s.join(observer, "r");
    s.run_for(Duration::from_secs(3));
    s.join(late, "r");
    s.run_for(Duration::from_secs(2));

    // The observer sees the host; nobody sees the observer.
    assert_eq!(joined_others(&s, observer), ["host"]);
    assert_eq!(joined_others(&s, late), ["host"]);
    let joined_msgs = |s: &Scenario, i| {
        count(
            s,
            i,
            |m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.name == "observer"),
        )
    };
    assert_eq!(joined_msgs(&s, host), 0);
    // Its camera and microphone are refused; the others get no track of it.
    assert!(
        count(&s, observer, |m| matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        )) > 0
    );
    let observer_id = s.clients[observer]
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Joined { participant_id, .. } => Some(*participant_id),
            _ => None,
        })
        .expect("joined");
    let observer_tracks = count(
        &s,
        host,
        |m| matches!(m, ServerMessage::TrackPublished { track } if track.participant_id == observer_id),
    );
    assert_eq!(observer_tracks, 0);
    // It receives the host's video.
    let frames = s.clients[observer]
        .frames
        .iter()
        .filter(|f| f.video)
        .count();
    assert!(frames > 10, "the observer decoded {frames} video frames");

    // It leaves unseen too.
    s.drop_socket(observer);
    s.run_for(Duration::from_secs(40));
    let left = count(&s, host, |m| {
        matches!(m, ServerMessage::ParticipantLeft { .. })
    });
    assert_eq!(left, 0);
}

#[test]
fn a_join_past_max_rooms_is_refused_and_existing_rooms_still_take_members() {
    let config = SfuConfig {
        max_rooms: 1,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 3);
    let a = s.add_client("a", Link::clean());
    let b = s.add_client("b", Link::clean());
    s.join(a, "one");
    s.join(b, "two");
    let refused = count(
        &s,
        b,
        |m| matches!(m, ServerMessage::Error { code: ErrorCode::RoomFull, message } if message.contains("rooms.max_rooms")),
    );
    assert_eq!(refused, 1);
    s.join(b, "one");
    assert_eq!(joined_others(&s, b), ["a"]);
}
