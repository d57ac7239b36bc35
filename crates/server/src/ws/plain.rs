//! `GET /ws/NAME`: a stream over a plain WebSocket, for clients with no RTWebSocket: the
//! CMAF mapping's messages (`rtws_cmaf`), each after a track byte (`a`/`v`), and a text
//! message `{"tracks":[{"kind":"video","codecs":"avc1…"},…]}` before the inits whenever the
//! tracks change. A stream that is not live gets `{"error":…,"not_live":true}` and a close.
//!
//! A plain WebSocket has no acks to tell what the client has taken, so this never bloats by a
//! byte budget of its own: what is queued for the socket and not yet written is counted; a
//! video frame that would take it past the budget is dropped with the rest of its GOP, and the
//! next keyframe replaces the video still queued. Audio is kept; a client whose writes make no
//! progress for 10 s while messages wait is disconnected.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use hls::live::LiveCmaf;
use hub::{Hub, Item, MediaKind, Protocol, StreamName};
use tokio::sync::Notify;
use tracing::debug;

use crate::access::{Access, StreamAction};
use crate::ws::rtws_cmaf::fragment_message;

/// Bytes queued for one client and not yet written to its socket, before video is skipped:
/// half a second at 1 Mbit/s. The kernel holds at most 16 KiB unsent besides
/// (`net::tune_http_stream`).
pub const BUDGET: usize = 64 * 1024;

/// The `/ws/NAME` route. With `auth.keys` a play needs a token granting it, in the URL's
/// query (`/ws/NAME?token=…`: a browser's WebSocket cannot send a header); refused with 401 or
/// 403 before the upgrade.
pub fn router(hub: Hub, access: Arc<Access>) -> Router {
    Router::new()
        .route("/ws/{*name}", get(upgrade))
        .with_state((hub, access))
}

async fn upgrade(
    ws: WebSocketUpgrade,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    State((hub, access)): State<(Hub, Arc<Access>)>,
) -> Response {
    let token = crate::access::query_token(query.as_deref());
    if let Ok(n) = StreamName::parse(&name)
        && let Err(d) = access.check_stream(token, n.as_str(), StreamAction::Play)
    {
        return d.into_response();
    }
    // The client sends nothing but closes and pings.
    ws.max_message_size(4096)
        .read_buffer_size(crate::ws::rtws::WS_READ_BUFFER)
        .write_buffer_size(crate::ws::rtws::WS_WRITE_BUFFER)
        .on_upgrade(move |socket| session(socket, name, hub))
}

/// Why a client was let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSlow;

struct Queued {
    /// A video frame (may be dropped); inits, track lists and audio are not.
    video: bool,
    msg: Message,
    len: usize,
}

/// A client whose writes have not progressed for this long while messages wait is let go.
pub const STALL: Duration = Duration::from_secs(10);

/// What is waiting for one client's socket, under the byte budget. Sans-IO: the session
/// pushes, the writer pops and says when a message is written.
pub struct Outbox {
    limit: usize,
    queue: VecDeque<Queued>,
    /// Bytes queued (not the message being written: a keyframe on its way over a slow link
    /// must not hold back the frames after it, which the budget would drop).
    bytes: usize,
    skipping_video: bool,
    /// When a write last completed (or the outbox was made).
    progress: Instant,
    /// Video frames dropped so far.
    pub dropped: u64,
}

impl Outbox {
    /// An outbox with `limit` bytes of budget.
    pub fn new(limit: usize, now: Instant) -> Outbox {
        Outbox {
            limit,
            queue: VecDeque::new(),
            bytes: 0,
            skipping_video: false,
            progress: now,
            dropped: 0,
        }
    }

    fn push(&mut self, video: bool, msg: Message, len: usize) {
        self.bytes += len;
        self.queue.push_back(Queued { video, msg, len });
    }

    /// A message that always goes (track list, init segment).
    pub fn push_control(&mut self, msg: Message, len: usize) {
        self.push(false, msg, len);
    }

    /// A frame's message. A video frame past the budget is dropped with the rest of its GOP;
    /// the next keyframe replaces whatever video is still queued. Audio always goes, unless
    /// the client's writes have made no progress for [`STALL`].
    pub fn push_frame(
        &mut self,
        kind: MediaKind,
        keyframe: bool,
        msg: Message,
        len: usize,
        now: Instant,
    ) -> Result<(), TooSlow> {
        if !self.queue.is_empty() && now.saturating_duration_since(self.progress) > STALL {
            return Err(TooSlow);
        }
        match kind {
            MediaKind::Audio => self.push(false, msg, len),
            MediaKind::Video if !keyframe => {
                if self.skipping_video || self.bytes + len > self.limit {
                    // Past the budget: this frame and the rest of its GOP are dropped (the
                    // frames already queued still decode, and go).
                    self.skipping_video = true;
                    self.dropped += 1;
                    return Ok(());
                }
                self.push(true, msg, len);
            }
            MediaKind::Video => {
                // A keyframe always goes: when the budget is short, the video still queued is
                // an older GOP a player no longer needs, and is dropped for it. So even a
                // keyframe bigger than the budget comes through, and what waits is one GOP.
                if self.skipping_video || self.bytes + len > self.limit {
                    let before = self.queue.len();
                    let mut freed = 0;
                    self.queue.retain(|q| {
                        if q.video {
                            freed += q.len;
                        }
                        !q.video
                    });
                    self.bytes -= freed;
                    self.dropped += (before - self.queue.len()) as u64;
                }
                self.skipping_video = false;
                self.push(true, msg, len);
            }
        }
        Ok(())
    }

    /// The next message to write.
    pub fn pop(&mut self) -> Option<Message> {
        let q = self.queue.pop_front()?;
        self.bytes -= q.len;
        Some(q.msg)
    }

    /// A popped message is written.
    pub fn written(&mut self, now: Instant) {
        self.progress = now;
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn tag(kind: MediaKind) -> u8 {
    match kind {
        MediaKind::Audio => b'a',
        MediaKind::Video => b'v',
    }
}

async fn session(socket: WebSocket, name: String, hub: Hub) {
    let (mut sink, mut incoming) = socket.split();
    let reader = StreamName::parse(name.split('?').next().unwrap_or_default())
        .ok()
        .and_then(|n| hub.subscribe(&n, Protocol::WebSocket));
    let Some(mut reader) = reader else {
        let text = serde_json::json!({"error": format!("{name} is not live"), "not_live": true});
        let _ = sink.send(Message::Text(text.to_string().into())).await;
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: 4404,
                reason: "not live".into(),
            })))
            .await;
        return;
    };
    let outbox = Arc::new(Mutex::new(Outbox::new(BUDGET, Instant::now())));
    let wake = Arc::new(Notify::new());
    let writer = {
        let (outbox, wake) = (outbox.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                let next = outbox.lock().unwrap_or_else(|e| e.into_inner()).pop();
                match next {
                    Some(msg) => {
                        if sink.send(msg).await.is_err() {
                            return;
                        }
                        outbox
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .written(Instant::now());
                    }
                    None => wake.notified().await,
                }
            }
        })
    };
    let mut live = LiveCmaf::new();
    loop {
        tokio::select! {
            msg = incoming.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            item = reader.recv() => {
                let mut ob = outbox.lock().unwrap_or_else(|e| e.into_inner());
                match item {
                    Some(Item::Tracks(t)) => match live.set_tracks(&t, std::time::Instant::now()) {
                        Ok(inits) => push_inits(&mut ob, inits),
                        Err(e) => {
                            debug!(stream = %name, "plain WebSocket: {e}");
                            let text = serde_json::json!({"error": e.to_string()}).to_string();
                            let len = text.len();
                            ob.push_control(Message::Text(text.into()), len);
                        }
                    },
                    Some(Item::Frame(f)) => {
                        // A one-kind track list held for its second kind goes once the wait
                        // is over.
                        if let Ok(inits) = live.poll_inits(std::time::Instant::now()) {
                            push_inits(&mut ob, inits);
                        }
                        if let Some(Ok(frag)) = live.fragment(&f) {
                            let mut m = vec![tag(frag.kind)];
                            m.extend_from_slice(&fragment_message(&frag, wall_us()));
                            let len = m.len();
                            if ob.push_frame(frag.kind, frag.keyframe, Message::Binary(m.into()), len, Instant::now()).is_err() {
                                debug!(stream = %name, queued = ob.bytes(), "plain WebSocket: the client takes nothing; closed");
                                break;
                            }
                        }
                    }
                    None => break, // the stream ended
                }
                drop(ob);
                wake.notify_one();
            }
        }
    }
    writer.abort();
}

/// The track list (text), then each track's init, all outside the budget.
fn push_inits(ob: &mut Outbox, inits: Vec<hls::live::LiveInit>) {
    if inits.is_empty() {
        return;
    }
    let list: Vec<_> = inits
        .iter()
        .map(|i| {
            serde_json::json!({
                "kind": if i.kind == MediaKind::Audio { "audio" } else { "video" },
                "codecs": i.codecs,
            })
        })
        .collect();
    let text = serde_json::json!({ "tracks": list }).to_string();
    let len = text.len();
    ob.push_control(Message::Text(text.into()), len);
    for i in inits {
        let codecs = &i.codecs.as_bytes()[..i.codecs.len().min(255)];
        let mut m = vec![tag(i.kind), b'i', codecs.len() as u8];
        m.extend_from_slice(codecs);
        m.extend_from_slice(&i.init);
        let len = m.len();
        ob.push_control(Message::Binary(m.into()), len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    fn msg(n: usize) -> Message {
        Message::Binary(vec![0; n].into())
    }

    #[test]
    fn video_over_budget_is_dropped_to_the_next_keyframe_and_audio_kept() {
        let mut ob = Outbox::new(1000, now());
        ob.push_control(msg(100), 100);
        ob.push_frame(MediaKind::Video, true, msg(400), 400, now())
            .unwrap();
        ob.push_frame(MediaKind::Video, false, msg(400), 400, now())
            .unwrap();
        assert_eq!(ob.bytes(), 900);
        // Past the budget: dropped, and the deltas after it even when they would fit.
        ob.push_frame(MediaKind::Video, false, msg(400), 400, now())
            .unwrap();
        ob.push_frame(MediaKind::Video, false, msg(50), 50, now())
            .unwrap();
        assert_eq!((ob.bytes(), ob.dropped), (900, 2));
        // Audio is kept throughout.
        ob.push_frame(MediaKind::Audio, true, msg(50), 50, now())
            .unwrap();
        // The next keyframe replaces the old GOP still queued.
        ob.push_frame(MediaKind::Video, true, msg(300), 300, now())
            .unwrap();
        assert_eq!((ob.bytes(), ob.dropped), (450, 4));
        let lens: Vec<usize> = std::iter::from_fn(|| ob.pop())
            .map(|m| match m {
                Message::Binary(b) => b.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(lens, vec![100, 50, 300]);
    }

    #[test]
    fn a_keyframe_bigger_than_the_budget_still_goes() {
        let mut ob = Outbox::new(1000, now());
        ob.push_frame(MediaKind::Audio, true, msg(100), 100, now())
            .unwrap();
        ob.push_frame(MediaKind::Video, true, msg(5000), 5000, now())
            .unwrap();
        assert_eq!(ob.bytes(), 5100);
        // Behind it, deltas are dropped and the keyframe stays.
        ob.push_frame(MediaKind::Video, false, msg(10), 10, now())
            .unwrap();
        assert_eq!((ob.bytes(), ob.dropped), (5100, 1));
        // The next keyframe replaces it.
        ob.push_frame(MediaKind::Video, true, msg(4000), 4000, now())
            .unwrap();
        assert_eq!((ob.bytes(), ob.dropped), (4100, 2));
    }

    #[test]
    fn the_message_being_written_is_off_the_budget_and_a_stalled_client_is_let_go() {
        let t = now();
        let mut ob = Outbox::new(1000, t);
        ob.push_frame(MediaKind::Video, true, msg(900), 900, t)
            .unwrap();
        assert!(ob.pop().is_some());
        assert_eq!(ob.bytes(), 0, "being written: no longer counted");
        ob.push_frame(MediaKind::Video, false, msg(800), 800, t)
            .unwrap();
        assert_eq!(
            (ob.bytes(), ob.dropped),
            (800, 0),
            "the delta behind it fits"
        );
        // Nothing written for longer than STALL while messages wait: let go.
        let later = t + STALL + Duration::from_millis(1);
        assert_eq!(
            ob.push_frame(MediaKind::Audio, true, msg(100), 100, later),
            Err(TooSlow)
        );
        // A write completing is progress.
        ob.written(later);
        assert!(
            ob.push_frame(MediaKind::Audio, true, msg(100), 100, later)
                .is_ok()
        );
    }
}
