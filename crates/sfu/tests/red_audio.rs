//! Audio with RED (RFC 2198): a publisher that sends Opus wrapped in RED, one subscriber that
//! negotiated RED and one that did not. The one without gets the primary frames only (plain
//! Opus it can decode), the one with gets the redundancy too and so, on a lossy downlink, hears
//! frames it would otherwise have lost. Virtual time, seeded.

use std::time::Duration;

use sfu::SfuConfig;
use testkit::{Link, Publish, Scenario};

/// The audio frame numbers a client received, in order.
fn audio_numbers(s: &Scenario, client: usize) -> Vec<u32> {
    s.clients[client]
        .frames
        .iter()
        .filter(|f| !f.video)
        .map(|f| f.number)
        .collect()
}

#[test]
fn red_goes_whole_to_subscribers_with_red_and_as_plain_opus_to_the_rest() {
    let mut s = Scenario::new(SfuConfig::default(), 21);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].use_red(s.now);
    s.clients[p].publish = Some(Publish {
        video: false,
        audio: true,
        simulcast: false,
    });
    s.join(p, "red");
    let lossy = Link {
        down_loss: 0.15,
        ..Link::clean()
    };
    let with_red = s.add_client("with", lossy);
    s.clients[with_red].use_red(s.now);
    s.join(with_red, "red");
    let without = s.add_client("without", lossy);
    s.join(without, "red");
    s.run_for(Duration::from_secs(20));

    let report = s.sfu.room_report("red").expect("room");
    let part = |n: &str| {
        report
            .participants
            .iter()
            .find(|x| x.name == n)
            .unwrap()
            .clone()
    };
    assert!(
        part("pub").tracks[0].red,
        "the publisher's audio arrives as RED"
    );
    assert!(part("with").subscriptions[0].red, "forwarded whole");
    assert!(!part("without").subscriptions[0].red, "cut to its primary");

    // 50 frames a second for about 19 s after everyone is connected.
    let sent = s.clients[p].frames_sent_audio();
    let w = audio_numbers(&s, with_red);
    let wo = audio_numbers(&s, without);
    // Plain Opus out of RED: every number is one the publisher sent, in order (a RED header
    // read as Opus would give garbage numbers).
    assert!(
        wo.len() > 500,
        "the subscriber without RED hears audio: {}",
        wo.len()
    );
    assert!(wo.windows(2).all(|p| p[0] < p[1]), "in order, no garbage");
    assert!(wo.iter().all(|n| *n < sent));
    assert!(w.windows(2).all(|p| p[0] < p[1]));
    // 15 % of packets lost on the way down: without RED about that share of frames is gone;
    // with it a frame is lost only when its packet and the next both are.
    let span = |v: &[u32]| f64::from(v.last().unwrap() - v.first().unwrap() + 1);
    let got_with = w.len() as f64 / span(&w);
    let got_without = wo.len() as f64 / span(&wo);
    eprintln!(
        "15 % down loss: {:.1} % of audio frames arrive with RED, {:.1} % without",
        got_with * 100.0,
        got_without * 100.0
    );
    assert!(
        got_without < 0.92,
        "without RED {:.1} % of frames arrive",
        got_without * 100.0
    );
    assert!(
        got_with > 0.95,
        "with RED {:.1} % of frames arrive (without: {:.1} %)",
        got_with * 100.0,
        got_without * 100.0
    );
}

/// The hub (recording, LL-HLS, WHEP viewers of hub streams) fills an audio frame lost on the way
/// in from the next packet's redundancy: a RED publisher's recording loses far less than a plain one's
/// on the same lossy uplink, and its frames stay in order on the right timeline.
#[test]
fn the_hub_takes_lost_frames_back_from_red() {
    let mut s = Scenario::new(SfuConfig::default(), 22);
    let lossy_up = Link {
        up_loss: 0.15,
        ..Link::clean()
    };
    let mut pubs = Vec::new();
    for (name, red) in [("red", true), ("plain", false)] {
        let c = s.add_client(name, lossy_up);
        if red {
            s.clients[c].use_red(s.now);
        }
        s.clients[c].publish = Some(Publish {
            video: false,
            audio: true,
            simulcast: false,
        });
        s.join(c, "rec");
        pubs.push(c);
    }
    s.run_for(Duration::from_secs(20));
    // (number, pts) of each audio frame the hub got from a publisher.
    let hub = |c: usize| -> Vec<(u32, u64)> {
        let pid = s.clients[c].participant_id.unwrap();
        s.hub_frames
            .iter()
            .filter(|(p, _, f)| *p == pid && f.data.len() == 5)
            .map(|(_, _, f)| {
                let d = &f.data;
                (u32::from_be_bytes([d[1], d[2], d[3], d[4]]), f.pts_us)
            })
            .collect()
    };
    let share = |v: &[(u32, u64)]| {
        v.len() as f64 / f64::from(v.last().unwrap().0 - v.first().unwrap().0 + 1)
    };
    let (red, plain) = (hub(pubs[0]), hub(pubs[1]));
    assert!(red.len() > 500 && plain.len() > 500);
    let (got_red, got_plain) = (share(&red), share(&plain));
    eprintln!(
        "15 % up loss: the hub has {:.1} % of a RED publisher's audio frames, {:.1} % of a plain one's",
        got_red * 100.0,
        got_plain * 100.0
    );
    assert!(got_plain < 0.92, "plain: {got_plain}");
    assert!(got_red > 0.96, "RED: {got_red} (plain {got_plain})");
    // In order, and a recovered frame sits at its own time: 20 ms per frame number.
    for w in red.windows(2) {
        assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1, "{w:?}");
        let dn = u64::from(w[1].0 - w[0].0);
        assert_eq!(w[1].1 - w[0].1, dn * 20_000, "{w:?}");
    }
}
