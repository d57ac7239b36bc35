//! Dynacast: a simulcast publisher is told which layers anyone receives (`layers_needed`) and
//! the test client, as the SDK does, stops sending the others. More layers are asked for at
//! once, fewer only after they have not been needed for a while.

use std::time::Duration;

use sfu::SfuConfig;
use sfu::signal::{ClientMessage, ServerMessage, SubscribeTrack};
use testkit::{Link, Publish, Scenario};

/// The RIDs of every `layers_needed` the client got, in order.
fn told(s: &Scenario, idx: usize) -> Vec<Vec<String>> {
    s.clients[idx]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::LayersNeeded { rids, .. } => Some(rids.clone()),
            _ => None,
        })
        .collect()
}

fn rids(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| r.to_string()).collect()
}

/// Room "dyn" with a member publishing a three-layer camera (no audio).
fn room_with_a_simulcast_camera(config: SfuConfig, seed: u64) -> (Scenario, usize) {
    let mut s = Scenario::new(config, seed);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].publish = Some(Publish {
        video: true,
        audio: false,
        simulcast: true,
    });
    s.join(p, "dyn");
    (s, p)
}

#[test]
fn layers_nobody_receives_are_paused_and_come_back_when_wanted() {
    // The layer follows `max_height` alone here (the allocator has its own tests).
    let config = SfuConfig {
        bandwidth_allocation: false,
        ..SfuConfig::default()
    };
    let (mut s, p) = room_with_a_simulcast_camera(config, 11);
    // Alone in the room: nobody needs more than the lowest layer, which always runs; the
    // publisher is told once that has lasted the hold (5 s), not before.
    s.run_for(Duration::from_secs(3));
    assert_eq!(told(&s, p), Vec::<Vec<String>>::new());
    s.run_for(Duration::from_secs(4));
    assert_eq!(told(&s, p), vec![rids(&["q"])]);
    assert_eq!(s.clients[p].layers_active, [true, false, false]);

    // A viewer who wants the full picture: the publisher is told at once.
    let v = s.add_client("viewer", Link::clean());
    s.join(v, "dyn");
    s.run_for(Duration::from_secs(1));
    assert_eq!(told(&s, p).last(), Some(&rids(&["q", "h", "f"])));
    s.run_for(Duration::from_secs(2));
    let track = *s.clients[v].sub_tracks.values().next().expect("subscribed");
    let last = |s: &Scenario| s.clients[v].video_frames(track).last().map(|f| f.layer);
    assert_eq!(last(&s), Some(2), "the viewer gets the top layer back");

    // The viewer makes it a small tile: the top two layers are paused after the hold.
    let cap = |h: Option<u32>| ClientMessage::Subscribe {
        tracks: vec![SubscribeTrack {
            track_id: track,
            max_height: h,
        }],
    };
    s.signal(v, cap(Some(180)));
    s.run_for(Duration::from_secs(3));
    assert_eq!(told(&s, p).len(), 2, "nothing told before the hold");
    s.run_for(Duration::from_secs(3));
    assert_eq!(told(&s, p).last(), Some(&rids(&["q"])));
    let frames_before = s.clients[v].video_frames(track).len();
    s.run_for(Duration::from_secs(1));
    assert!(
        s.clients[v].video_frames(track).len() > frames_before + 20,
        "the viewer keeps receiving the lowest layer"
    );
    assert_eq!(last(&s), Some(0));

    // A middle size: the middle layer comes back at once, and the viewer moves to it.
    s.signal(v, cap(Some(400)));
    s.run_for(Duration::from_secs(2));
    assert_eq!(told(&s, p).last(), Some(&rids(&["q", "h"])));
    assert_eq!(last(&s), Some(1));

    // Someone plays the member's stream over HLS: every layer (HLS has a variant per layer).
    let pid = s.clients[p].participant_id.expect("joined");
    s.sfu.set_hub_watched(pid, true);
    s.run_for(Duration::from_secs(1));
    assert_eq!(told(&s, p).last(), Some(&rids(&["q", "h", "f"])));
    s.sfu.set_hub_watched(pid, false);

    // The viewer leaves: back to the lowest layer after the hold.
    s.signal(v, ClientMessage::Leave);
    s.run_for(Duration::from_secs(7));
    assert_eq!(told(&s, p).last(), Some(&rids(&["q"])));
    assert_eq!(s.clients[p].layers_active, [true, false, false]);
}

#[test]
fn off_tells_nothing() {
    let config = SfuConfig {
        dynacast: false,
        ..SfuConfig::default()
    };
    let (mut s, p) = room_with_a_simulcast_camera(config, 12);
    s.run_for(Duration::from_secs(8));
    assert_eq!(told(&s, p), Vec::<Vec<String>>::new());
}
