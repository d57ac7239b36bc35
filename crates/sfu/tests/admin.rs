//! The operator's actions on a room (virtual time): a track muted server-side stops reaching
//! everyone and comes back, a grant changed live takes a source away, a member removed and a
//! room ended are told why.

use std::time::Duration;

use sfu::admin::{AdminError, GrantUpdate};
use sfu::signal::{LeaveReason, ServerMessage, TrackKind, TrackSource};
use sfu::{SfuConfig, TrackId};
use testkit::{Link, Publish, Scenario};

const AV: Publish = Publish {
    video: true,
    audio: true,
    simulcast: false,
};

fn video_frames(s: &Scenario, idx: usize) -> usize {
    s.clients[idx].frames.iter().filter(|f| f.video).count()
}

/// A host publishing camera and microphone in room "r" to one viewer, 3 s in: the scenario,
/// the two, and the host's video track.
fn host_and_viewer(seed: u64) -> (Scenario, usize, usize, TrackId) {
    let mut s = Scenario::new(SfuConfig::default(), seed);
    let host = s.add_client("host", Link::clean());
    let viewer = s.add_client("viewer", Link::clean());
    s.clients[host].publish = Some(AV);
    s.join(viewer, "r");
    s.join(host, "r");
    s.run_for(Duration::from_secs(3));
    let video = host_video_of(&s, viewer, host);
    (s, host, viewer, video)
}

#[test]
fn a_track_muted_by_the_operator_stops_for_everyone_and_comes_back() {
    let (mut s, host, viewer, video) = host_and_viewer(21);
    assert!(video_frames(&s, viewer) > 30);

    assert_eq!(
        s.sfu.server_mute(s.now, "nope", video, true),
        Err(AdminError::NoRoom("nope".into()))
    );
    s.sfu.server_mute(s.now, "r", video, true).unwrap();
    s.run_for(Duration::from_millis(300));
    let before = video_frames(&s, viewer);
    s.run_for(Duration::from_secs(2));
    assert!(
        video_frames(&s, viewer) <= before + 1,
        "no video while muted: {} more frames",
        video_frames(&s, viewer) - before
    );
    // Both members were told, the owner too, with by_server.
    for idx in [host, viewer] {
        assert!(s.clients[idx].messages.iter().any(|m| matches!(
            m,
            ServerMessage::TrackMuted { track_id, muted: true, by_server: true, .. } if *track_id == video
        )));
    }
    s.sfu.server_mute(s.now, "r", video, false).unwrap();
    let unmuted = video_frames(&s, viewer);
    s.run_for(Duration::from_secs(2));
    assert!(video_frames(&s, viewer) > unmuted + 20, "video is back");
}

#[test]
fn a_grant_changed_live_takes_the_camera_away() {
    let (mut s, host, viewer, video) = host_and_viewer(22);
    let pid = s.clients[host].participant_id.unwrap();
    let g = s
        .sfu
        .update_grant(
            s.now,
            "r",
            pid,
            GrantUpdate {
                publish: Some(vec![TrackSource::Microphone]),
                ..GrantUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(g.publish, Some(vec![TrackSource::Microphone]));
    s.run_for(Duration::from_secs(1));
    assert!(s.clients[viewer].messages.iter().any(|m| matches!(
        m,
        ServerMessage::TrackUnpublished { track_id, .. } if *track_id == video
    )));
}

#[test]
fn a_removed_member_and_an_ended_room_are_told_why() {
    let mut s = Scenario::new(SfuConfig::default(), 23);
    let a = s.add_client("a", Link::clean());
    let b = s.add_client("b", Link::clean());
    let c = s.add_client("c", Link::clean());
    for i in [a, b, c] {
        s.join(i, "r");
    }
    s.run_for(Duration::from_millis(500));
    let bid = s.clients[b].participant_id.unwrap();
    s.sfu.kick(s.now, "r", bid).unwrap();
    s.run_for(Duration::from_millis(100));
    let bye = |s: &Scenario, i: usize| {
        s.clients[i].messages.iter().any(|m| {
            matches!(
                m,
                ServerMessage::Bye {
                    reason: LeaveReason::Kicked
                }
            )
        })
    };
    assert!(bye(&s, b));
    assert!(s.clients[a].messages.iter().any(|m| matches!(
        m,
        ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Kicked } if *participant_id == bid
    )));
    assert!(matches!(
        s.sfu.kick(s.now, "r", bid),
        Err(AdminError::NoParticipant(..))
    ));
    assert_eq!(s.sfu.end_room(s.now, "r"), Ok(2));
    s.run_for(Duration::from_millis(100));
    assert!(bye(&s, a) && bye(&s, c));
    assert_eq!(
        s.sfu.end_room(s.now, "r"),
        Err(AdminError::NoRoom("r".into()))
    );
}

#[test]
fn a_room_admin_removes_and_mutes_over_signalling_and_a_member_may_not() {
    use sfu::signal::{ClientMessage, ErrorCode};
    let config = SfuConfig {
        require_grant: true,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 24);
    let host = s.add_client("host", Link::clean());
    let guest = s.add_client("guest", Link::clean());
    let other = s.add_client("other", Link::clean());
    let admin = sfu::Grant {
        room_admin: true,
        ..sfu::Grant::all()
    };
    for (i, g) in [
        (host, admin),
        (guest, sfu::Grant::all()),
        (other, sfu::Grant::all()),
    ] {
        let conn = s.clients[i].conn;
        s.sfu.authorize(conn, g);
    }
    s.clients[guest].publish = Some(AV);
    for i in [host, guest, other] {
        s.join(i, "r");
    }
    s.run_for(Duration::from_secs(3));
    let guest_video = host_video_of(&s, host, guest);
    let host_id = s.clients[host].participant_id.unwrap();
    // A plain member may not.
    s.signal(
        other,
        ClientMessage::RemoveParticipant {
            participant_id: host_id,
        },
    );
    assert!(s.clients[other].messages.iter().any(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    )));
    // The admin mutes the guest's camera, then removes the other member.
    s.signal(
        host,
        ClientMessage::MuteTrack {
            track_id: guest_video,
            muted: true,
        },
    );
    assert!(s.clients[guest].messages.iter().any(|m| matches!(
        m,
        ServerMessage::TrackMuted { track_id, muted: true, by_server: true, .. } if *track_id == guest_video
    )));
    let other_id = s.clients[other].participant_id.unwrap();
    s.signal(
        host,
        ClientMessage::RemoveParticipant {
            participant_id: other_id,
        },
    );
    s.run_for(Duration::from_millis(100));
    assert!(s.clients[other].messages.iter().any(|m| matches!(
        m,
        ServerMessage::Bye {
            reason: LeaveReason::Kicked
        }
    )));
}

/// The video track of `owner` as `viewer` was told of it.
fn host_video_of(s: &Scenario, viewer: usize, owner: usize) -> TrackId {
    let id = s.clients[owner].participant_id.expect("joined");
    s.clients[viewer]
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::TrackPublished { track }
                if track.participant_id == id && track.kind == TrackKind::Video =>
            {
                Some(track.id)
            }
            _ => None,
        })
        .expect("announced")
}
