//! `hls.aac_from_opus`: a stream whose audio is Opus (every WebRTC source) is packaged for HLS
//! with AAC encoded from that Opus, for players that take only AAC (Safari's and iOS's native
//! HLS). The video is untouched; a stream that already has AAC (RTMP) keeps it.
//!
//! It sits between the hub reader and the segmenter: the track list it passes on has the
//! Opus track replaced by an AAC one at the same index, and that track's frames are
//! transcoded. Encoding costs a few milliseconds of CPU per second of audio per stream.

use std::sync::Arc;

use hub::{Codec, Frame, Item, TrackInfo};
use tracing::{debug, warn};
use transcode::{AacConfig, OpusToAac};

/// One stream's Opus-to-AAC stage. Without a transcoding to do, items pass unchanged.
#[derive(Default)]
pub struct AacFromOpus {
    /// The Opus track's index, its transcoder, and the channel count it was made for.
    opus: Option<(usize, OpusToAac, u8)>,
    warned: bool,
}

impl AacFromOpus {
    /// The items the segmenter gets for one from the hub.
    pub fn map(&mut self, item: Item) -> Vec<Item> {
        match item {
            Item::Tracks(tracks) => vec![Item::Tracks(self.tracks(tracks))],
            Item::Frame(f) => self.frame(f),
        }
    }

    fn tracks(&mut self, tracks: Arc<[TrackInfo]>) -> Arc<[TrackInfo]> {
        let has_aac = tracks.iter().any(|t| t.codec == Codec::Aac);
        let opus = tracks.iter().position(|t| t.codec == Codec::Opus);
        let (Some(index), false) = (opus, has_aac) else {
            self.opus = None;
            return tracks;
        };
        // Two channels unless the source says one: WebRTC describes Opus as stereo.
        let channels = tracks[index].channels.unwrap_or(2).clamp(1, 2);
        match self.opus.take() {
            // The same track (perhaps moved in the list): the encoder and its timeline go on.
            Some((_, t, ch)) if ch == channels => self.opus = Some((index, t, ch)),
            _ => match OpusToAac::new(channels, AacConfig::default()) {
                Ok(t) => {
                    debug!(channels, "HLS audio: AAC from Opus");
                    self.opus = Some((index, t, channels));
                }
                Err(e) => {
                    warn!("HLS audio stays Opus: {e}");
                    return tracks;
                }
            },
        }
        let Some((_, t, _)) = &self.opus else {
            return tracks;
        };
        let mut aac = TrackInfo::new(Codec::Aac);
        aac.config = Arc::from(t.asc());
        aac.sample_rate = Some(48_000);
        aac.channels = Some(channels);
        let mut out = tracks.to_vec();
        out[index] = aac;
        out.into()
    }

    fn frame(&mut self, f: Arc<Frame>) -> Vec<Item> {
        let Some((index, t, _)) = &mut self.opus else {
            return vec![Item::Frame(f)];
        };
        if f.track != *index {
            return vec![Item::Frame(f)];
        }
        let units = match t.push(&f.data, f.pts) {
            Ok(units) => units,
            Err(e) => {
                // A corrupt packet is concealed; say so once, not 50 times a second.
                if !self.warned {
                    warn!("HLS audio: {e}");
                    self.warned = true;
                }
                return Vec::new();
            }
        };
        units
            .into_iter()
            .map(|u| {
                Item::Frame(Arc::new(Frame {
                    track: f.track,
                    pts: u.pts_us,
                    dts: u.pts_us,
                    keyframe: true,
                    data: u.data.into(),
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(codecs: &[Codec]) -> Arc<[TrackInfo]> {
        codecs.iter().map(|c| TrackInfo::new(*c)).collect()
    }

    #[test]
    fn opus_becomes_aac_in_the_list_and_other_tracks_pass() {
        let mut stage = AacFromOpus::default();
        let out = stage.map(Item::Tracks(list(&[Codec::H264, Codec::Opus])));
        let [Item::Tracks(t)] = &out[..] else {
            panic!("one track list");
        };
        assert_eq!(t[0].codec, Codec::H264);
        assert_eq!(t[1].codec, Codec::Aac);
        assert_eq!(&t[1].config[..], &[0x11, 0x90], "AAC-LC, 48 kHz, stereo");
        // Video passes as it is.
        let video = Arc::new(Frame {
            track: 0,
            pts: 0,
            dts: 0,
            keyframe: true,
            data: Arc::from(&[0u8, 0, 0, 1, 0x65][..]),
        });
        let out = stage.map(Item::Frame(video.clone()));
        assert!(matches!(&out[..], [Item::Frame(f)] if Arc::ptr_eq(f, &video)));
        // A stream that has AAC already (RTMP, with its Opus for WebRTC) keeps it.
        let rtmp = list(&[Codec::H264, Codec::Aac, Codec::Opus]);
        let out = stage.map(Item::Tracks(rtmp.clone()));
        assert!(matches!(&out[..], [Item::Tracks(t)] if Arc::ptr_eq(t, &rtmp)));
    }
}
