//! A simulcast publisher, a subscriber on a clean link and one whose downlink is capped: the
//! capped one is moved to a layer its link carries (str0m's send-side estimate over TWCC, then
//! the stream allocator), the clean one keeps the top layer, and once the cap is lifted the
//! capped one climbs back to the layer it asked for. Virtual time, seeded.

use std::time::Duration;

use sfu::SfuConfig;
use sfu::signal::{PauseReason, ServerMessage};
use testkit::{Link, Publish, Scenario};

/// The layer most of the video frames of the last `secs` seconds came on (30 frames a second),
/// and how many frames that is; `None` with no frames at all.
fn recent_layer(s: &Scenario, client: usize, secs: usize) -> Option<(u8, usize)> {
    let frames: Vec<_> = s.clients[client]
        .frames
        .iter()
        .filter(|f| f.video)
        .collect();
    let tail = &frames[frames.len().saturating_sub(secs * 30)..];
    let mut count = [0usize; 3];
    for f in tail {
        count[usize::from(f.layer.min(2))] += 1;
    }
    let layer = (0..3u8).max_by_key(|&l| count[usize::from(l)])?;
    (!tail.is_empty()).then_some((layer, tail.len()))
}

/// Room "bwe" with allocation on and a publisher of a 3-layer camera and a microphone.
fn room_with_a_simulcast_publisher(seed: u64) -> Scenario {
    let config = SfuConfig {
        bandwidth_allocation: true,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, seed);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].publish = Some(Publish {
        video: true,
        audio: true,
        simulcast: true,
    });
    s.join(p, "bwe");
    s
}

#[test]
fn a_capped_subscriber_gets_a_layer_its_link_carries_and_climbs_back_when_it_is_lifted() {
    let mut s = room_with_a_simulcast_publisher(11);
    let clean = s.add_client("clean", Link::clean());
    s.join(clean, "bwe");
    let capped = s.add_client("capped", Link::clean());
    s.join(capped, "bwe");
    s.run_for(Duration::from_secs(3));
    assert_eq!(
        recent_layer(&s, clean, 2).map(|r| r.0),
        Some(2),
        "both start at the top layer"
    );
    assert_eq!(recent_layer(&s, capped, 2).map(|r| r.0), Some(2));

    // The top layer is about 400 kbit/s here, the middle one about 110: cap at 250.
    s.clients[capped].link = Link::capped(250_000);
    s.run_for(Duration::from_secs(10));
    let (layer, frames) = recent_layer(&s, capped, 3).expect("video frames");
    assert!(
        layer < 2,
        "under the cap the subscriber left the top layer: layer {layer}"
    );
    assert!(frames > 60, "and frames keep coming: {frames} in 3 s");
    assert_eq!(
        recent_layer(&s, clean, 3).map(|r| r.0),
        Some(2),
        "the clean subscriber keeps the top layer"
    );

    // Back up: slower here than in Chromium (7-10 s in tests/e2e/bwe.test.mjs), because after
    // the congested spell str0m's loss-based controller holds the estimate near 120 kbit/s for
    // about 10 s before it climbs, and each step up then waits for its padding trial.
    s.clients[capped].link = Link::clean();
    s.run_for(Duration::from_secs(25));
    let (layer, frames) = recent_layer(&s, capped, 3).expect("video frames");
    assert_eq!(
        layer, 2,
        "back at the top layer within 25 s of the cap lifting"
    );
    assert!(frames > 80, "{frames} frames in 3 s");
}

/// The `track_paused` messages a client has had, in order: `(paused, track)`.
fn pauses(s: &Scenario, client: usize) -> Vec<bool> {
    s.clients[client]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::TrackPaused { paused, reason, .. } => {
                assert_eq!(*reason, PauseReason::Bandwidth);
                Some(*paused)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn video_is_paused_when_no_layer_fits_the_subscriber_is_told_and_it_resumes_when_one_does() {
    let mut s = room_with_a_simulcast_publisher(12);
    let sub = s.add_client("sub", Link::clean());
    s.join(sub, "bwe");
    s.run_for(Duration::from_secs(3));
    assert!(recent_layer(&s, sub, 2).is_some(), "video flows first");
    assert!(pauses(&s, sub).is_empty());

    // The audio fits, the lowest video layer (about 100 kbit/s) with it does not: the video
    // stops, the audio goes on. The audio here is about 30 kbit/s on the wire, and str0m pads
    // a connection that sends media up to 50 kbit/s: at 80 kbit/s that padding filled the
    // link and a fifth of the audio was lost (a real Opus stream, ~60 kbit/s, needs none).
    s.clients[sub].link = Link::capped(100_000);
    s.run_for(Duration::from_secs(30));
    assert_eq!(
        pauses(&s, sub),
        [true],
        "told once that the video is paused"
    );
    let video_before = s.clients[sub].frames.iter().filter(|f| f.video).count();
    let audio_before = s.clients[sub].frames.iter().filter(|f| !f.video).count();
    s.run_for(Duration::from_secs(3));
    let video = s.clients[sub].frames.iter().filter(|f| f.video).count() - video_before;
    let audio = s.clients[sub].frames.iter().filter(|f| !f.video).count() - audio_before;
    assert_eq!(video, 0, "no video while paused");
    assert!(
        audio >= 135,
        "audio goes on while the video is paused: {audio} of 150 in 3 s"
    );

    s.clients[sub].link = Link::clean();
    s.run_for(Duration::from_secs(15));
    assert_eq!(pauses(&s, sub), [true, false], "told that it resumed");
    let (_, frames) = recent_layer(&s, sub, 3).expect("video again");
    assert!(frames > 60, "{frames} frames in 3 s after resuming");
}

/// The layer most of the last `secs` seconds of one track's frames came on.
fn track_layer(s: &Scenario, client: usize, track: sfu::TrackId, secs: usize) -> Option<u8> {
    let frames = s.clients[client].video_frames(track);
    let tail = &frames[frames.len().saturating_sub(secs * 30)..];
    let mut count = [0usize; 3];
    for f in tail {
        count[usize::from(f.layer.min(2))] += 1;
    }
    (!tail.is_empty()).then(|| (0..3u8).max_by_key(|&l| count[usize::from(l)]))?
}

#[test]
fn the_loudest_speakers_camera_is_served_first_when_the_link_carries_one_step_up() {
    let config = SfuConfig {
        bandwidth_allocation: true,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 23);
    let mut cams = Vec::new();
    for name in ["ann", "bob"] {
        let c = s.add_client(name, Link::clean());
        s.clients[c].publish = Some(Publish {
            video: true,
            audio: true,
            simulcast: true,
        });
        s.clients[c].audio_dbov = Some(127);
        s.join(c, "spk");
        cams.push(c);
    }
    let (ann, bob) = (cams[0], cams[1]);
    let viewer = s.add_client("viewer", Link::clean());
    s.join(viewer, "spk");
    s.run_for(Duration::from_secs(3));
    let track_of = |s: &Scenario, who: usize| {
        let pid = s.clients[who].participant_id.expect("joined");
        s.clients[viewer]
            .messages
            .iter()
            .find_map(|m| match m {
                ServerMessage::Joined { participants, .. } => participants
                    .iter()
                    .find(|p| p.id == pid)
                    .and_then(|p| {
                        p.tracks
                            .iter()
                            .find(|t| t.kind == sfu::signal::TrackKind::Video)
                    })
                    .map(|t| t.id),
                ServerMessage::TrackPublished { track }
                    if track.participant_id == pid
                        && track.kind == sfu::signal::TrackKind::Video =>
                {
                    Some(track.id)
                }
                _ => None,
            })
            .expect("the viewer knows the camera")
    };
    let (ann_cam, bob_cam) = (track_of(&s, ann), track_of(&s, bob));
    // Every track keeps moving first (each its lowest layer), then the rest of the link goes
    // one layer step at a time, the loudest speaker's camera first: 500 kbit/s carries both
    // lowest layers and one step up, not two (nor a top layer, about 400 kbit/s here).
    s.clients[viewer].link = Link::capped(500_000);
    // Ann speaks.
    s.clients[ann].audio_dbov = Some(20);
    // str0m's estimate takes a while to settle under a cap (about 420 kbit/s here).
    s.run_for(Duration::from_secs(30));
    let layers = |s: &Scenario| {
        (
            track_layer(s, viewer, ann_cam, 3),
            track_layer(s, viewer, bob_cam, 3),
        )
    };
    let (a, b) = layers(&s);
    assert!(
        a > b,
        "the speaker's camera is on a higher layer: ann {a:?}, bob {b:?}"
    );
    // Bob speaks instead: the layers swap.
    s.clients[ann].audio_dbov = Some(127);
    s.clients[bob].audio_dbov = Some(20);
    s.run_for(Duration::from_secs(20));
    let (a, b) = layers(&s);
    assert!(
        b > a,
        "the new speaker's camera goes up, the old one's down: ann {a:?}, bob {b:?}"
    );
}
