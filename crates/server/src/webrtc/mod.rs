//! WebRTC: the media shards (engine.rs starts them, shard.rs is one shard's loop, queues.rs
//! what feeds it), WHIP and WHEP over HTTP, and the bridge between the SFU and the stream hub.
//! Room signalling's WebSocket is served in `http` and handed to the shards here.

pub mod engine;
mod gso;
pub mod hub_bridge;
pub mod queues;
pub mod shard;
pub mod whip;

pub use engine::MediaHandle;
