//! onair's stream hub: every published stream, whatever its protocol, as named tracks of
//! frames that any other protocol can read.
//!
//! ```
//! # use hub::*; use std::time::Instant;
//! let hub = Hub::new(HubConfig::default());
//! let name = StreamName::parse("live/show").unwrap();
//! let publisher = hub.publish(name.clone(), Protocol::Rtmp, Instant::now()).unwrap();
//! publisher.set_tracks(vec![TrackInfo::new(Codec::H264)]);
//! let mut reader = hub.subscribe(&name, Protocol::Whep).unwrap();
//! publisher.push(Frame { track: 0, pts: 0, dts: 0, keyframe: true, data: vec![0; 4].into() });
//! assert!(matches!(reader.try_recv(), Ok(Some(Item::Tracks(_)))));
//! assert!(matches!(reader.try_recv(), Ok(Some(Item::Frame(_)))));
//! drop(publisher); // the stream ends
//! assert!(reader.try_recv().is_err());
//! ```
//!
//! The hub does no IO and reads no clock (`publish` takes the time); it uses tokio's
//! synchronisation types only, so readers can `await` frames.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod media;
mod name;
mod registry;

pub use media::{Codec, Frame, MediaKind, TrackInfo};
pub use name::{MAX_NAME_LEN, MAX_SEGMENTS, NameError, StreamName};
pub use registry::{
    ConflictPolicy, Hub, HubConfig, HubEvent, Item, Protocol, PublishError, Publisher, Reader,
    StreamInfo, Watch,
};
