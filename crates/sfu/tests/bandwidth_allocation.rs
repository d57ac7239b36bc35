//! A simulcast publisher, a subscriber on a clean link and one whose downlink is capped: the
//! capped one is moved to a layer its link carries (str0m's send-side estimate over TWCC, then
//! the stream allocator), the clean one keeps the top layer, and once the cap is lifted the
//! capped one climbs back to the layer it asked for. Virtual time, seeded.

use std::time::Duration;

use sfu::SfuConfig;
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

#[test]
fn a_capped_subscriber_gets_a_layer_its_link_carries_and_climbs_back_when_it_is_lifted() {
    let config = SfuConfig {
        bandwidth_allocation: true,
        ..SfuConfig::default()
    };
    let mut s = Scenario::new(config, 11);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].publish = Some(Publish {
        video: true,
        audio: true,
        simulcast: true,
    });
    s.join(p, "bwe");
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

    s.clients[capped].link = Link::clean();
    s.run_for(Duration::from_secs(15));
    let (layer, frames) = recent_layer(&s, capped, 3).expect("video frames");
    assert_eq!(
        layer, 2,
        "back at the top layer within 15 s of the cap lifting"
    );
    assert!(frames > 80, "{frames} frames in 3 s");
}
