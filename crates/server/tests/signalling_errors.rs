//! Bad input on the signalling socket gets a clear error on that socket and nothing else
//! changes: the socket stays usable and other participants are unaffected.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use testkit::server::TestServer;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &TestServer) -> Ws {
    tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("connects")
        .0
}

async fn send(ws: &mut Ws, text: impl Into<String>) {
    ws.send(Message::text(text.into())).await.expect("sent");
}

/// The next JSON message, skipping nothing.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a reply within 5 s")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("server sends JSON");
        }
    }
}

async fn expect_error(ws: &mut Ws, code: &str) -> String {
    let m = recv(ws).await;
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["code"], code, "{m}");
    m["message"].as_str().unwrap_or_default().to_owned()
}

async fn ping(ws: &mut Ws) {
    send(ws, r#"{"type":"ping"}"#).await;
    assert_eq!(recv(ws).await["type"], "pong");
}

fn join(room: &str, name: &str) -> String {
    json!({"type": "join", "room": room, "name": name}).to_string()
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_breaks_nothing() {
    let server = TestServer::start(
        env!("CARGO_BIN_EXE_onair"),
        &[("ONAIR_ROOMS_MAX_PARTICIPANTS", "2")],
    );

    // A bystander already in the room.
    let mut other = connect(&server).await;
    send(&mut other, join("r1", "bystander")).await;
    assert_eq!(recv(&mut other).await["type"], "joined");

    let mut ws = connect(&server).await;
    send(&mut ws, "not json").await;
    expect_error(&mut ws, "bad_json").await;
    send(&mut ws, r#"{"type":"teleport"}"#).await;
    let m = expect_error(&mut ws, "bad_json").await;
    assert!(m.contains("teleport"), "names the unknown type: {m}");
    send(&mut ws, r#"{"type":"offer","sdp":"v=0"}"#).await;
    expect_error(&mut ws, "not_joined").await;
    send(&mut ws, "x".repeat(200 * 1024)).await;
    let m = expect_error(&mut ws, "too_large").await;
    assert!(m.contains("204800"), "says how large: {m}");
    ping(&mut ws).await;

    // A frame over the hard limit (256 KiB) is not buffered: the socket closes with 1009.
    let mut big = connect(&server).await;
    let _ = big.send(Message::text("x".repeat(1024 * 1024))).await;
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = big.next().await {
            match m {
                Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("closed within 5 s");
    assert_eq!(close, Some(1009), "close code");

    send(&mut ws, join("../etc", "x")).await;
    expect_error(&mut ws, "bad_request").await;
    send(&mut ws, join("r1", "   ")).await;
    expect_error(&mut ws, "bad_request").await;
    send(&mut ws, join("r1", "second")).await;
    let joined = recv(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["participants"].as_array().map(Vec::len), Some(1));
    send(&mut ws, join("r1", "again")).await;
    expect_error(&mut ws, "already_joined").await;

    send(
        &mut ws,
        json!({"type": "offer", "sdp": "garbage", "tracks": []}).to_string(),
    )
    .await;
    expect_error(&mut ws, "bad_sdp").await;
    send(
        &mut ws,
        json!({"type": "answer", "sdp": "v=0\r\n"}).to_string(),
    )
    .await;
    expect_error(&mut ws, "bad_sdp").await;
    send(
        &mut ws,
        json!({"type": "mute", "track_id": "TR_999", "muted": true}).to_string(),
    )
    .await;
    expect_error(&mut ws, "bad_request").await;
    send(
        &mut ws,
        json!({"type": "candidate", "pc": "publisher", "candidate": "candidate:nonsense"})
            .to_string(),
    )
    .await;
    expect_error(&mut ws, "bad_request").await;
    ping(&mut ws).await;

    // The room holds two: a third is refused with the limit in the message.
    let mut third = connect(&server).await;
    send(&mut third, join("r1", "third")).await;
    let m = expect_error(&mut third, "room_full").await;
    assert!(m.contains("limit is 2"), "{m}");

    // The bystander saw exactly one join and nothing of the errors, and still works.
    let m = recv(&mut other).await;
    assert_eq!(m["type"], "participant_joined", "{m}");
    assert_eq!(m["participant"]["name"], "second");
    ping(&mut other).await;

    // Leaving is seen by the bystander.
    send(&mut ws, r#"{"type":"leave"}"#).await;
    assert_eq!(recv(&mut ws).await["type"], "bye");
    let m = recv(&mut other).await;
    assert_eq!(m["type"], "participant_left", "{m}");
    assert_eq!(m["reason"], "left");
    assert_eq!(server.stop(), Some(0));
}
