//! The queues into a media shard, one per kind of traffic, each with what happens when it is
//! full. Nothing reaches a shard through a queue that grows with traffic without bound: a slow
//! shard slows the tasks that feed it, or drops what the network would have dropped.
//!
//! | queue | carries | when full |
//! |---|---|---|
//! | `control` | signalling, HTTP API requests, ICE-TCP frames | the sender waits (its socket or request is slowed; nothing is lost) |
//! | `frames` | hub frames of hub-only streams (RTMP, …) for their hub source on the shard, which its WHEP viewers there receive | the stream's feed waits, so its hub reader falls behind and the hub skips it to the next keyframe, as for every hub reader |
//! | `media` | datagrams relayed in-process by TURN, packets exported by other shards | dropped and counted (`onair_media_dropped_total`), as the network would drop them; NACKs and keyframe requests recover |
//! | `shards` | between shards: exports' keyframe requests and ends; TURN relays closing | unbounded, but each message stands for a stream or a relay, never for a packet |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::webrtc::shard::Command;

/// Requests waiting for a shard: enough for bursts of joins; a sender waits beyond.
const CONTROL: usize = 1024;
/// Hub frames waiting (all of a shard's hub feeds together, one per stream with viewers here).
const FRAMES: usize = 512;
/// Relayed datagrams and exported batches waiting.
const MEDIA: usize = 1024;

/// What was dropped at full `media` queues, for `/metrics`.
#[derive(Debug, Default)]
pub struct Dropped {
    /// Datagrams TURN relayed to the SFU.
    pub relayed: AtomicU64,
    /// Batches of packets another shard exported.
    pub mirrored: AtomicU64,
}

/// The sending side of one shard's queues.
#[derive(Clone)]
pub struct ShardTx {
    pub control: mpsc::Sender<Command>,
    pub frames: mpsc::Sender<Command>,
    media: mpsc::Sender<Command>,
    shards: mpsc::UnboundedSender<Command>,
    dropped: Arc<Dropped>,
}

/// The receiving side, for the shard's loop.
pub struct ShardRx {
    pub control: mpsc::Receiver<Command>,
    pub frames: mpsc::Receiver<Command>,
    pub media: mpsc::Receiver<Command>,
    pub shards: mpsc::UnboundedReceiver<Command>,
}

/// A shard's queues; `dropped` is shared by every shard.
pub fn shard_queues(dropped: Arc<Dropped>) -> (ShardTx, ShardRx) {
    let (control, control_rx) = mpsc::channel(CONTROL);
    let (frames, frames_rx) = mpsc::channel(FRAMES);
    let (media, media_rx) = mpsc::channel(MEDIA);
    let (shards, shards_rx) = mpsc::unbounded_channel();
    (
        ShardTx {
            control,
            frames,
            media,
            shards,
            dropped,
        },
        ShardRx {
            control: control_rx,
            frames: frames_rx,
            media: media_rx,
            shards: shards_rx,
        },
    )
}

impl ShardTx {
    /// A request; waits while the queue is full. False when the shard has stopped.
    pub async fn request(&self, cmd: Command) -> bool {
        self.control.send(cmd).await.is_ok()
    }

    /// A datagram or a batch of exported packets: dropped (and counted) when the queue is full.
    pub fn media(&self, cmd: Command) {
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.media.try_send(cmd) {
            let counter = match cmd {
                Command::Mirrored(_) => &self.dropped.mirrored,
                _ => &self.dropped.relayed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A message from another shard (or TURN) about a stream or a relay.
    pub fn between_shards(&self, cmd: Command) {
        let _ = self.shards.send(cmd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn closed() -> Command {
        Command::RelayClosed(std::net::SocketAddr::from(([127, 0, 0, 1], 9)))
    }

    #[tokio::test]
    async fn media_past_the_bound_is_dropped_and_counted() {
        let dropped = Arc::new(Dropped::default());
        let (tx, mut rx) = shard_queues(dropped.clone());
        for _ in 0..MEDIA + 10 {
            tx.media(Command::Mirrored(Vec::new()));
        }
        assert_eq!(dropped.mirrored.load(Ordering::Relaxed), 10);
        assert_eq!(dropped.relayed.load(Ordering::Relaxed), 0);
        // What was queued is all there, in order; then room again.
        let mut n = 0;
        while rx.media.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, MEDIA);
        tx.media(Command::Mirrored(Vec::new()));
        assert_eq!(dropped.mirrored.load(Ordering::Relaxed), 10);
    }

    #[tokio::test]
    async fn a_request_waits_for_room_and_is_not_lost() {
        let (tx, mut rx) = shard_queues(Arc::default());
        for _ in 0..CONTROL {
            assert!(tx.request(closed()).await);
        }
        let waiting = tokio::time::timeout(Duration::from_millis(50), tx.request(closed())).await;
        assert!(waiting.is_err(), "a full queue makes the sender wait");
        assert!(rx.control.recv().await.is_some());
        let sent = tokio::time::timeout(Duration::from_millis(500), tx.request(closed())).await;
        assert_eq!(sent.ok(), Some(true), "room again: it goes in");
        let mut n = 0;
        while rx.control.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, CONTROL, "nothing dropped");
        drop(rx);
        assert!(!tx.request(closed()).await, "a stopped shard says so");
    }
}
