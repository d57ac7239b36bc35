//! Quality you can see: a publisher, a subscriber on a clean link and one whose downlink loses
//! a fifth of its packets. The room report carries each connection's figures (round trip,
//! loss, bitrate, candidate), the clean subscriber is graded excellent and the lossy one poor,
//! everyone in the room is told, and the histograms for Prometheus have counted. Virtual time,
//! seeded.

use std::time::Duration;

use sfu::SfuConfig;
use sfu::signal::{PcKind, Quality, ServerMessage};
use testkit::{Link, Publish, Scenario};

/// The grades `client` was told for participant `about`, in order.
fn told(s: &Scenario, client: usize, about: usize) -> Vec<Quality> {
    let Some(pid) = s.clients[about].participant_id else {
        return Vec::new();
    };
    s.clients[client]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ConnectionQuality {
                participant_id,
                quality,
            } if *participant_id == pid => Some(*quality),
            _ => None,
        })
        .collect()
}

/// Room "q" with a publisher ("pub": camera and microphone, one layer) on a clean link.
fn room_with_a_publisher(seed: u64) -> (Scenario, usize) {
    let mut s = Scenario::new(SfuConfig::default(), seed);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].publish = Some(Publish {
        video: true,
        audio: true,
        simulcast: false,
    });
    s.join(p, "q");
    (s, p)
}

#[test]
fn each_connection_is_measured_graded_and_announced() {
    let (mut s, _) = room_with_a_publisher(7);
    let clean = s.add_client("clean", Link::clean());
    s.join(clean, "q");
    let lossy = s.add_client(
        "lossy",
        Link {
            down_loss: 0.2,
            ..Link::clean()
        },
    );
    s.join(lossy, "q");
    s.run_for(Duration::from_secs(12));

    let report = s.sfu.room_report("q").expect("the room exists");
    assert_eq!(report.participants.len(), 3);
    let by_name = |n: &str| {
        report
            .participants
            .iter()
            .find(|p| p.name == n)
            .unwrap_or_else(|| panic!("{n} in the report"))
    };

    // The publisher: media in at a video bitrate, with a round trip and a host candidate.
    let publisher = by_name("pub");
    let up = publisher
        .connections
        .iter()
        .find(|c| c.kind == PcKind::Publisher)
        .expect("a publisher connection");
    assert!(
        up.bitrate_in_bps > 100_000,
        "video comes in: {} bit/s",
        up.bitrate_in_bps
    );
    let rtt = up.rtt_ms.expect("a round trip from TWCC");
    // 10 ms each way on the testkit's link.
    assert!((15.0..200.0).contains(&rtt), "round trip {rtt} ms");
    let cand = up.candidate.as_ref().expect("the pair in use");
    assert_eq!(cand.protocol, "udp");
    assert_eq!(publisher.tracks.len(), 2);
    let video = publisher
        .tracks
        .iter()
        .find(|t| t.layers.iter().any(|l| l.bitrate_bps > 100_000))
        .expect("a video track with its bitrate");
    assert!(!video.layers.is_empty());
    assert_eq!(publisher.quality, Some(Quality::Excellent));

    // Subscribers: what goes out, and what their receiver reports say came through.
    let down = |n: &str| {
        by_name(n)
            .connections
            .iter()
            .find(|c| c.kind == PcKind::Subscriber)
            .cloned()
            .expect("a subscriber connection")
    };
    let (c, l) = (down("clean"), down("lossy"));
    assert!(c.bitrate_out_bps > 100_000, "{}", c.bitrate_out_bps);
    assert!(l.bitrate_out_bps > 100_000, "{}", l.bitrate_out_bps);
    let c_loss = c.loss_out_pct.expect("the clean subscriber's loss");
    let l_loss = l.loss_out_pct.expect("the lossy subscriber's loss");
    assert!(c_loss < 2.0, "clean: {c_loss} % lost");
    assert!(
        (8.0..40.0).contains(&l_loss),
        "lossy (20 % dropped): {l_loss} % lost"
    );
    assert_eq!(by_name("clean").subscriptions.len(), 2);
    assert!(
        by_name("clean")
            .subscriptions
            .iter()
            .any(|s| s.bitrate_bps > 100_000)
    );
    assert_eq!(by_name("clean").quality, Some(Quality::Excellent));
    assert_eq!(by_name("lossy").quality, Some(Quality::Poor));

    // Everyone hears the grades, the lossy one about itself too.
    assert_eq!(told(&s, clean, lossy).last(), Some(&Quality::Poor));
    assert_eq!(told(&s, lossy, lossy).last(), Some(&Quality::Poor));
    assert_eq!(told(&s, lossy, clean).last(), Some(&Quality::Excellent));
    // Held, not flickering: a handful of announcements in 12 s, not one a second.
    assert!(
        told(&s, clean, lossy).len() <= 3,
        "{:?}",
        told(&s, clean, lossy)
    );

    let by_quality = s.sfu.participants_by_quality();
    let count = |q: Quality| {
        by_quality
            .iter()
            .find(|(g, _)| *g == q)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count(Quality::Excellent), 2);
    assert_eq!(count(Quality::Poor), 1);

    let h = s.sfu.quality_histograms();
    assert!(
        h.rtt_ms.count >= 20,
        "rtt observed {} times",
        h.rtt_ms.count
    );
    assert!(h.loss_pct.count >= 20);
    // Some of the losses were 10 % or more (the lossy subscriber's), most were none.
    let at_most_5 = h.loss_pct.counts[h.loss_pct.bounds.iter().position(|b| *b == 5.0).unwrap()];
    assert!(at_most_5 < h.loss_pct.count, "some loss was above 5 %");
    assert!(at_most_5 > h.loss_pct.count / 2, "most was not");
}

#[test]
fn a_participant_that_goes_silent_is_lost() {
    let (mut s, p) = room_with_a_publisher(8);
    let watcher = s.add_client("watcher", Link::clean());
    s.join(watcher, "q");
    s.run_for(Duration::from_secs(5));
    assert_eq!(told(&s, watcher, p).last(), Some(&Quality::Excellent));
    // The publisher's network goes away (every packet either way lost); its signalling stays.
    s.clients[p].link = Link::lossy(1.0);
    s.run_for(Duration::from_secs(12));
    assert_eq!(told(&s, watcher, p).last(), Some(&Quality::Lost));
    let report = s.sfu.room_report("q").expect("room");
    let publisher = report
        .participants
        .iter()
        .find(|x| x.name == "pub")
        .unwrap();
    assert_eq!(publisher.quality, Some(Quality::Lost));
}
