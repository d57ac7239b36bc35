//! The real binary on loopback: Rust test peers (str0m) join one room over WebSocket
//! signalling and UDP, publish, receive each other, and chat over the data channel.

use std::collections::HashSet;
use std::time::Duration;

use testkit::Publish;
use testkit::live::{LiveOptions, spawn};
use testkit::server::TestServer;

#[test]
fn three_peers_exchange_media_and_chat_over_loopback() {
    let server = TestServer::start(env!("CARGO_BIN_EXE_onair"), &[]);
    let peer = |name: &str, chat: Option<&str>| {
        spawn(LiveOptions {
            url: server.ws_url(),
            room: "loopback".into(),
            name: name.into(),
            publish: Some(Publish {
                video: true,
                audio: true,
                simulcast: name == "a",
            }),
            chat: chat.map(|c| (Duration::from_secs(2), c.to_string())),
            stay: Duration::from_secs(5),
        })
    };
    let handles = [
        peer("a", Some("hello from a")),
        peer("b", None),
        peer("c", None),
    ];
    let clients: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("peer thread").expect("peer ran"))
        .collect();

    for c in &clients {
        let tracks: HashSet<_> = c.frames.iter().filter_map(|f| f.track).collect();
        assert_eq!(
            tracks.len(),
            4,
            "{} receives audio and video of two others",
            c.name
        );
        let video = c.frames.iter().filter(|f| f.video).count();
        let audio = c.frames.iter().filter(|f| !f.video).count();
        // About 3 s of media after setup: 30 fps video and 50 fps audio from each of two peers.
        assert!(video > 100, "{}: {video} video frames", c.name);
        assert!(audio > 150, "{}: {audio} audio frames", c.name);
        assert!(
            c.frames.iter().filter(|f| f.video).all(|f| f.contiguous),
            "{}: gaps",
            c.name
        );
    }
    for c in &clients[1..] {
        assert!(
            c.data
                .iter()
                .any(|d| d.contains("hello from a") && d.contains("\"name\":\"a\"")),
            "{} got the chat with the sender's identity: {:?}",
            c.name,
            c.data
        );
    }
    assert_eq!(server.stop(), Some(0), "SIGTERM exits 0");
}

#[test]
fn publishing_past_the_track_limit_is_refused_with_a_clear_error() {
    let server = TestServer::start(
        env!("CARGO_BIN_EXE_onair"),
        &[("ONAIR_ROOMS_MAX_TRACKS_PER_PARTICIPANT", "1")],
    );
    let client = spawn(LiveOptions {
        url: server.ws_url(),
        room: "limits".into(),
        name: "greedy".into(),
        publish: Some(Publish {
            video: true,
            audio: true,
            simulcast: false,
        }),
        chat: None,
        stay: Duration::from_secs(2),
    })
    .join()
    .expect("peer thread")
    .expect("peer ran");
    let refused = client.messages.iter().find_map(|m| match m {
        sfu::signal::ServerMessage::Error {
            code: sfu::signal::ErrorCode::TooManyTracks,
            message,
        } => Some(message.clone()),
        _ => None,
    });
    let message = refused.expect("too_many_tracks error");
    assert!(message.contains("limit per participant is 1"), "{message}");
    assert_eq!(server.stop(), Some(0));
}
