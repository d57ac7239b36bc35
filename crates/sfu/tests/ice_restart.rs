//! `restart_ice` renegotiates the subscriber connection with new ICE credentials, and media
//! keeps flowing.

use std::time::Duration;

use sfu::SfuConfig;
use sfu::signal::{ClientMessage, ServerMessage};
use testkit::{Link, Publish, Scenario};

fn ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_owned())
}

#[test]
fn subscriber_ice_restart_keeps_media_flowing() {
    let mut s = Scenario::new(SfuConfig::default(), 5);
    let p = s.add_client("pub", Link::clean());
    s.clients[p].publish = Some(Publish {
        video: true,
        audio: true,
        simulcast: false,
    });
    s.join(p, "ice");
    let c = s.add_client("sub", Link::clean());
    s.join(c, "ice");
    s.run_for(Duration::from_secs(2));
    let offers_before = s.clients[c].offers.len();

    s.signal(c, ClientMessage::RestartIce);
    s.run_for(Duration::from_millis(200));
    let offers = &s.clients[c].offers;
    assert_eq!(offers.len(), offers_before + 1, "one new offer");
    let (first, last) = (ufrag(&offers[0]), ufrag(&offers[offers.len() - 1]));
    assert!(first.is_some() && last.is_some());
    assert_ne!(first, last, "new ICE credentials");

    let frames_at_restart = s.clients[c].frames.len();
    s.run_for(Duration::from_secs(2));
    assert!(
        s.clients[c].frames.len() > frames_at_restart + 100,
        "media flows after the restart"
    );
    let errors: Vec<_> = s.clients[c]
        .messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::Error { .. }))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn a_connection_that_never_connects_is_counted_as_an_ice_failure() {
    let mut s = Scenario::new(SfuConfig::default(), 21);
    // Every datagram either way is lost: ICE can never succeed.
    let i = s.add_client("a", Link::lossy(1.0));
    s.clients[i].publish = Some(Publish {
        video: true,
        audio: true,
        simulcast: false,
    });
    s.join(i, "room");
    // str0m gives up (Disconnected) only once it has remote candidates and all pairs failed.
    s.signal(
        i,
        ClientMessage::Candidate {
            pc: sfu::signal::PcKind::Publisher,
            candidate: Some("candidate:1 1 udp 2130706431 192.0.2.50 9 typ host".into()),
            sdp_mid: None,
        },
    );
    s.run_for(std::time::Duration::from_secs(60));
    let stats = s.sfu.stats();
    assert!(stats.ice_failures >= 1, "failures {}", stats.ice_failures);
    assert_eq!(stats.ice_disconnects, 0);
    // A clean client connects and is not counted.
    let mut s = Scenario::new(SfuConfig::default(), 22);
    let i = s.add_client("b", Link::clean());
    s.clients[i].publish = Some(Publish {
        video: true,
        audio: true,
        simulcast: false,
    });
    s.join(i, "room");
    s.run_for(std::time::Duration::from_secs(60));
    assert_eq!(s.sfu.stats().ice_failures, 0);
}
