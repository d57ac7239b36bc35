//! Active speakers from the publishers' audio levels (RFC 6464): the room is told who speaks,
//! loudest first, when that changes, and a newcomer is told who speaks. Virtual time, seeded.

use std::time::Duration;

use sfu::SfuConfig;
use sfu::ids::ParticipantId;
use sfu::signal::ServerMessage;
use testkit::{Link, Publish, Scenario};

/// The speaker lists `client` was told, in order.
fn told(s: &Scenario, client: usize) -> Vec<Vec<ParticipantId>> {
    s.clients[client]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ActiveSpeakers { speakers } => {
                Some(speakers.iter().map(|x| x.participant_id).collect())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_room_hears_who_speaks_loudest_first_and_when_it_changes() {
    let mut s = Scenario::new(SfuConfig::default(), 31);
    let mut talkers = Vec::new();
    for name in ["ann", "bob"] {
        let c = s.add_client(name, Link::clean());
        s.clients[c].publish = Some(Publish {
            video: false,
            audio: true,
            simulcast: false,
        });
        s.clients[c].audio_dbov = Some(127);
        s.join(c, "talk");
        talkers.push(c);
    }
    let listener = s.add_client("listener", Link::clean());
    s.join(listener, "talk");
    let (ann, bob) = (talkers[0], talkers[1]);
    let id = |c: usize, s: &Scenario| s.clients[c].participant_id.unwrap();
    s.run_for(Duration::from_secs(3));
    assert!(
        told(&s, listener).iter().all(|l| l.is_empty()),
        "silence: no one speaks ({:?})",
        told(&s, listener)
    );

    // Ann talks at -30 dBov: within a second she is the speaker, for everyone, herself included.
    s.clients[ann].audio_dbov = Some(30);
    s.run_for(Duration::from_secs(1));
    assert_eq!(told(&s, listener).last(), Some(&vec![id(ann, &s)]));
    assert_eq!(told(&s, ann).last(), Some(&vec![id(ann, &s)]));
    let announcements = told(&s, listener).len();

    // She goes on: no new announcement while nothing changes.
    s.run_for(Duration::from_secs(3));
    assert_eq!(told(&s, listener).len(), announcements);
    // Someone joining now is told who speaks, right after `joined`.
    let late = s.add_client("late", Link::clean());
    s.join(late, "talk");
    assert_eq!(told(&s, late), vec![vec![id(ann, &s)]]);

    // Bob talks louder (-15 dBov) while she goes on: he comes first, she second.
    s.clients[bob].audio_dbov = Some(15);
    s.run_for(Duration::from_secs(2));
    assert_eq!(
        told(&s, listener).last(),
        Some(&vec![id(bob, &s), id(ann, &s)])
    );

    // Both fall silent: within two seconds the list is empty.
    s.clients[ann].audio_dbov = Some(127);
    s.clients[bob].audio_dbov = Some(127);
    s.run_for(Duration::from_secs(2));
    assert_eq!(told(&s, listener).last(), Some(&Vec::new()));
    // Held, not flickering: a handful of announcements in all.
    assert!(told(&s, listener).len() <= 6, "{:?}", told(&s, listener));
}

#[test]
fn a_muted_microphone_or_one_without_levels_is_no_speaker() {
    let mut s = Scenario::new(SfuConfig::default(), 32);
    let c = s.add_client("quiet", Link::clean());
    s.clients[c].publish = Some(Publish {
        video: false,
        audio: true,
        simulcast: false,
    });
    // No audio-level extension at all.
    s.join(c, "talk");
    let listener = s.add_client("listener", Link::clean());
    s.join(listener, "talk");
    s.run_for(Duration::from_secs(3));
    assert!(told(&s, listener).iter().all(|l| l.is_empty()));
}
