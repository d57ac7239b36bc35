//! Leaving frees everything; a dropped signalling socket keeps the participant (and its media)
//! for the grace period, and `resume` takes the place back; past the grace period it is removed.

use std::time::Duration;

use sfu::SfuConfig;
use sfu::signal::{ClientMessage, LeaveReason, ServerMessage};
use testkit::{Link, Publish, Scenario};

const AV: Publish = Publish {
    video: true,
    audio: true,
    simulcast: false,
};

fn three_in_a_room(grace: Duration) -> Scenario {
    let config = SfuConfig {
        reconnect_grace: grace,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 11);
    for name in ["a", "b", "c"] {
        let i = s.add_client(name, Link::clean());
        s.clients[i].publish = Some(AV);
        s.join(i, "room");
    }
    s.run_for(Duration::from_secs(2));
    s
}

fn left(s: &Scenario, observer: usize) -> Vec<(String, LeaveReason)> {
    s.clients[observer]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ParticipantLeft {
                participant_id,
                reason,
            } => Some((participant_id.to_string(), *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn everyone_leaving_frees_rooms_tracks_and_peers() {
    let mut s = three_in_a_room(Duration::from_secs(20));
    assert_eq!(s.sfu.participant_count(), 3);
    assert_eq!(s.sfu.track_count(), 6);
    assert_eq!(s.sfu.peer_count(), 6);
    // Everyone receives the other two's audio and video.
    for c in &s.clients {
        let tracks: std::collections::HashSet<_> =
            c.frames.iter().filter_map(|f| f.track).collect();
        assert_eq!(
            tracks.len(),
            4,
            "{} receives {} tracks",
            c.name,
            tracks.len()
        );
    }

    s.signal(0, ClientMessage::Leave);
    s.run_for(Duration::from_millis(500));
    let a = s.clients[0].participant_id.unwrap().to_string();
    assert_eq!(left(&s, 1), vec![(a.clone(), LeaveReason::Left)]);
    assert_eq!(left(&s, 2), vec![(a, LeaveReason::Left)]);
    assert_eq!(s.sfu.track_count(), 4);
    assert_eq!(s.sfu.peer_count(), 4);
    assert!(
        s.clients[1]
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::TrackUnpublished { .. })),
        "others are told the tracks went away"
    );

    s.signal(1, ClientMessage::Leave);
    s.signal(2, ClientMessage::Leave);
    s.run_for(Duration::from_millis(500));
    assert_eq!(s.sfu.participant_count(), 0);
    assert_eq!(s.sfu.track_count(), 0);
    assert_eq!(s.sfu.peer_count(), 0);
    assert!(s.sfu.rooms().is_empty());
}

#[test]
fn dropped_socket_keeps_media_until_grace_ends() {
    let mut s = three_in_a_room(Duration::from_secs(3));
    let before = s.clients[1].frames.len();
    s.drop_socket(0);
    s.run_for(Duration::from_secs(2));
    assert_eq!(
        s.sfu.participant_count(),
        3,
        "still there within the grace period"
    );
    let from_a = |s: &Scenario| s.clients[1].frames.len();
    assert!(
        from_a(&s) > before + 100,
        "media kept flowing while the socket was away"
    );
    assert!(left(&s, 1).is_empty());

    s.run_for(Duration::from_secs(2));
    let a = s.clients[0].participant_id.unwrap().to_string();
    assert_eq!(left(&s, 1), vec![(a, LeaveReason::Timeout)]);
    assert_eq!(s.sfu.participant_count(), 2);
    assert_eq!(s.sfu.peer_count(), 4);
}

#[test]
fn resume_within_grace_takes_the_place_back() {
    let mut s = three_in_a_room(Duration::from_secs(3));
    let id = s.clients[0].participant_id;
    let token = s.clients[0].resume_token.clone().unwrap();
    s.drop_socket(0);
    s.run_for(Duration::from_secs(2));

    // A new socket for the same client.
    let conn = sfu::ConnId(9999);
    s.clients[0].conn = conn;
    s.sfu.connect(conn);
    s.clients[0].online = true;
    s.signal(
        0,
        ClientMessage::Join {
            room: "room".into(),
            name: "a".into(),
            token: None,
            auto_subscribe: true,
            resume: Some(token),
            mode: None,
        },
    );
    s.run_for(Duration::from_secs(3));
    assert_eq!(
        s.clients[0].participant_id, id,
        "same participant after resume"
    );
    assert_eq!(s.sfu.participant_count(), 3);
    assert!(left(&s, 1).is_empty(), "nobody saw a leave");

    // An unknown token is refused with a clear error.
    s.signal(
        1,
        ClientMessage::Join {
            room: "room".into(),
            name: "x".into(),
            token: None,
            auto_subscribe: true,
            resume: Some("nope".into()),
            mode: None,
        },
    );
    assert!(s.clients[1].messages.iter().any(|m| matches!(
        m,
        ServerMessage::Error {
            code: sfu::signal::ErrorCode::AlreadyJoined,
            ..
        }
    )));
}

#[test]
fn a_vanished_participant_is_removed_and_the_others_stay() {
    let mut s = three_in_a_room(Duration::from_secs(3));
    // Client c's tab dies: its socket closes and its network goes silent.
    s.clients[2].link = Link::lossy(1.0);
    s.drop_socket(2);
    s.run_for(Duration::from_secs(8));
    let c = s.clients[2].participant_id.unwrap().to_string();
    assert_eq!(left(&s, 0), vec![(c.clone(), LeaveReason::Timeout)]);
    assert_eq!(left(&s, 1), vec![(c, LeaveReason::Timeout)]);
    assert_eq!(s.sfu.participant_count(), 2);
    assert_eq!(s.sfu.peer_count(), 4);
    // a and b still receive each other.
    let before = s.clients[0].frames.len();
    s.run_for(Duration::from_secs(2));
    assert!(
        s.clients[0].frames.len() > before + 100,
        "media still flows between the others"
    );
}

#[test]
fn a_departed_tracks_mline_is_reused_and_numbering_continues() {
    let mut s = three_in_a_room(Duration::from_secs(20));
    // The first joiner's tracks hold everyone's first m-lines.
    s.signal(0, ClientMessage::Leave);
    s.run_for(Duration::from_secs(1));
    let d = s.add_client("d", Link::clean());
    s.clients[d].publish = Some(AV);
    s.join(d, "room");
    s.run_for(Duration::from_secs(3));
    let b = &s.clients[1];
    // b's subscriber connection survived and carries d's tracks on the reused m-lines.
    let d_tracks: std::collections::HashSet<_> = b
        .frames
        .iter()
        .filter(|f| f.at > s.now - Duration::from_secs(1))
        .filter_map(|f| f.track)
        .collect();
    assert_eq!(d_tracks.len(), 4, "b receives c and d: {d_tracks:?}");
    // The departed track may have been cut mid-frame; that partial frame is dropped by the
    // receiver, so the reused m-line's first frame may follow a gap, but it is a keyframe and
    // nothing after it is broken.
    let jumps: Vec<_> = b
        .frames
        .iter()
        .filter(|f| f.video && !f.contiguous && !f.key)
        .map(|f| (f.track, f.number))
        .collect();
    assert!(
        jumps.is_empty(),
        "undecodable frames on a reused m-line: {jumps:?}"
    );
    let mids = b.sub_tracks.len();
    assert_eq!(
        mids, 4,
        "two m-lines reused, none added: {:?}",
        b.sub_tracks
    );
}

#[test]
fn a_member_that_never_answers_its_offer_is_removed() {
    let mut s = Scenario::new(SfuConfig::default(), 11);
    let host = s.add_client("host", Link::clean());
    s.clients[host].publish = Some(AV);
    // A member with a live socket that reads nothing it is sent (no client answers for it).
    let silent = sfu::ConnId(9999);
    s.sfu.connect(silent);
    s.sfu.handle_signal(
        s.now,
        silent,
        ClientMessage::Join {
            room: "r".into(),
            name: "silent".into(),
            token: None,
            auto_subscribe: true,
            resume: None,
            mode: None,
        },
    );
    s.join(host, "r");
    let left = |s: &Scenario| {
        s.clients[host].messages.iter().any(|m| {
            matches!(
                m,
                ServerMessage::ParticipantLeft {
                    reason: LeaveReason::Timeout,
                    ..
                }
            )
        })
    };
    // The host's tracks make an offer to the silent member, which never answers.
    s.run_for(Duration::from_secs(25));
    assert!(!left(&s), "still there after 25 s");
    s.run_for(Duration::from_secs(10));
    assert!(left(&s), "removed once its offer waited 30 s");
}
