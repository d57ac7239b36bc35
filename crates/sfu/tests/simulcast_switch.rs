//! A simulcast publisher and one subscriber: the layer follows the subscriber's requested
//! `max_height`, switches happen only at a keyframe of the new layer, and the subscriber sees
//! one continuous stream across switches (str0m's receiver flags any sequence gap).

use std::time::Duration;

use sfu::SfuConfig;
use sfu::signal::{ClientMessage, SubscribeTrack};
use testkit::{Link, Publish, ReceivedFrame, Scenario};

fn layer_runs(frames: &[&ReceivedFrame]) -> Vec<(u8, u32, bool)> {
    // (layer, first frame number, first frame is key) for each run of frames from one layer.
    let mut runs: Vec<(u8, u32, bool)> = Vec::new();
    for f in frames {
        if runs.last().is_none_or(|r| r.0 != f.layer) {
            runs.push((f.layer, f.number, f.key));
        }
    }
    runs
}

#[test]
fn layer_switches_only_at_keyframes_and_stream_stays_continuous() {
    // The layer here follows the subscriber's `max_height` alone: the stream allocator, which
    // climbs one layer per 1.5 s behind the estimate, has its own tests
    // (bandwidth_allocation.rs).
    let config = SfuConfig {
        bandwidth_allocation: false,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 7);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].publish = Some(Publish {
        video: true,
        audio: false,
        simulcast: true,
    });
    s.join(p, "sim");
    let c = s.add_client("viewer", Link::clean());
    s.join(c, "sim");
    s.run_for(Duration::from_secs(2));

    let track = *s.clients[c].sub_tracks.values().next().expect("subscribed");
    let cap = |h: Option<u32>| ClientMessage::Subscribe {
        tracks: vec![SubscribeTrack {
            track_id: track,
            max_height: h,
        }],
    };
    // Small tile, then spotlight, then a middle size.
    s.signal(c, cap(Some(180)));
    s.run_for(Duration::from_secs(2));
    s.signal(c, cap(None));
    s.run_for(Duration::from_secs(2));
    s.signal(c, cap(Some(400)));
    s.run_for(Duration::from_secs(2));

    let frames = s.clients[c].video_frames(track);
    let runs = layer_runs(&frames);
    let layers: Vec<u8> = runs.iter().map(|r| r.0).collect();
    assert_eq!(layers, vec![2, 0, 2, 1], "layer sequence: {runs:?}");
    for (layer, first, key) in &runs {
        assert!(
            key,
            "layer {layer} started at frame {first} without a keyframe: {runs:?}"
        );
    }
    assert!(
        frames.iter().all(|f| f.contiguous),
        "a sequence gap was visible to the subscriber"
    );
    // No frame lost around the switches: frame numbers advance one by one. Switching up, the
    // old layer's picture of a frame may arrive before the new layer's keyframe of the same
    // frame (the SFU keeps the old layer flowing until then); that repeat is the only exception.
    for w in frames.windows(2) {
        let next = w[1].number == w[0].number + 1;
        let same_frame_new_layer =
            w[1].number == w[0].number && w[1].key && w[1].layer != w[0].layer;
        assert!(
            next || same_frame_new_layer,
            "frames skipped at a switch: {:?} {:?}",
            w[0],
            w[1]
        );
    }
    // Each switch cost one keyframe on the new layer, not a stream of them.
    let sent = s.clients[p].keyframes_sent;
    assert!(
        sent.iter().all(|&k| k <= 3),
        "keyframes per layer: {sent:?}"
    );
}

#[test]
fn the_hub_takes_the_highest_layer_that_is_sending() {
    // A browser holds its top simulcast layers back until its bandwidth estimate allows them.
    // The hub (LL-HLS, recording) must get frames from what is sent, and move up when more is.
    let mut s = Scenario::new(SfuConfig::default(), 11);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].publish = Some(Publish {
        video: true,
        audio: false,
        simulcast: true,
    });
    s.clients[p].layers_sending = 1;
    s.join(p, "hub");
    s.run_for(Duration::from_secs(2));
    // The test peer's frames carry their layer's index in their second byte.
    let layers_seen = |s: &Scenario, from: usize| -> Vec<u8> {
        let mut v: Vec<u8> = s.hub_frames[from..]
            .iter()
            .filter_map(|(_, _, f)| f.data.get(1).copied())
            .collect();
        v.dedup();
        v
    };
    assert!(
        !s.hub_frames.is_empty(),
        "only the lowest layer is sent: the hub must still get frames"
    );
    assert_eq!(layers_seen(&s, 0), vec![0]);
    // The top layer comes up: the hub moves to it (at a keyframe it asks for).
    s.clients[p].layers_sending = 3;
    let before = s.hub_frames.len();
    s.run_for(Duration::from_secs(2));
    let after = layers_seen(&s, before);
    assert_eq!(
        after.last(),
        Some(&2),
        "the hub follows the top layer: {after:?}"
    );
    assert!(
        s.clients[p].keyframes_sent[2] >= 1,
        "a keyframe was asked of layer 2"
    );
    // The top layer stops again: after a second of quiet the hub goes back down.
    s.clients[p].layers_sending = 1;
    let before = s.hub_frames.len();
    s.run_for(Duration::from_secs(3));
    let down = layers_seen(&s, before);
    assert_eq!(down.last(), Some(&0), "back to what is sent: {down:?}");
    // Across both moves the hub's times only go forward.
    let pts: Vec<u64> = s.hub_frames.iter().map(|(_, _, f)| f.pts_us).collect();
    assert!(
        pts.windows(2).all(|w| w[1] > w[0]),
        "hub frame times go back: {:?}",
        pts.windows(2).find(|w| w[1] <= w[0])
    );
}

#[test]
fn with_hub_layers_each_lower_layer_is_reassembled_on_its_own() {
    // HLS offers one variant per simulcast layer: the main feed is the top layer being sent,
    // and each layer below it comes as frames of its own, starting at a keyframe.
    let config = SfuConfig {
        hub_layers: true,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 13);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].publish = Some(Publish {
        video: true,
        audio: false,
        simulcast: true,
    });
    s.join(p, "layers");
    s.run_for(Duration::from_secs(3));
    // The test peer's frames carry their layer's index in their second byte.
    let main: Vec<u8> = s
        .hub_frames
        .iter()
        .filter_map(|(_, _, f)| f.data.get(1).copied())
        .collect();
    assert_eq!(main.last(), Some(&2), "the main feed ends on the top layer");
    for layer in [0u8, 1] {
        let frames: Vec<_> = s
            .hub_layer_frames
            .iter()
            .filter(|(_, _, l, _)| *l == layer)
            .map(|(_, _, _, f)| f)
            .collect();
        assert!(frames.len() > 30, "layer {layer}: {} frames", frames.len());
        assert!(frames[0].keyframe, "layer {layer} starts at a keyframe");
        assert!(
            frames.iter().all(|f| f.data.get(1) == Some(&layer)),
            "layer {layer}'s feed holds only its own frames"
        );
        assert!(
            frames.windows(2).all(|w| w[1].pts_us > w[0].pts_us),
            "layer {layer}'s times go forward"
        );
    }
    assert!(
        s.hub_layer_frames.iter().all(|(_, _, l, _)| *l < 2),
        "the top layer is the main feed's, not fed twice"
    );
    // Without `hub_layers` (HLS off) nothing is reassembled beyond the main feed.
    let mut s = Scenario::new(SfuConfig::default(), 13);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].publish = Some(Publish {
        video: true,
        audio: false,
        simulcast: true,
    });
    s.join(p, "layers");
    s.run_for(Duration::from_secs(2));
    assert!(!s.hub_frames.is_empty() && s.hub_layer_frames.is_empty());
}
