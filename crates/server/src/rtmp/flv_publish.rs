//! A publish of FLV media (RTMP, RTWebSocket's TC mapping) into the hub: the stream name
//! claimed, tracks and frames passed on. With `rtmp.transcode_audio`, AAC is also decoded and
//! encoded to Opus once per stream, as an extra track, so WebRTC viewers hear it.

use std::time::Instant;

use hub::{Codec, Frame, Hub, Protocol, Publisher, StreamName, TrackInfo};
use tracing::warn;

/// AAC → Opus for one stream: the AAC track's index, the Opus twin's, and the transcoder.
struct AudioTwin {
    aac: usize,
    opus: usize,
    transcoder: transcode::AacToOpus,
    errors: u64,
}

/// One publish in the hub.
pub struct FlvPublish {
    publisher: Publisher,
    transcode: bool,
    twin: Option<AudioTwin>,
}

impl FlvPublish {
    /// Claims hub stream `app/key` for `proto`; Err with the reason a client is told. `key`
    /// may carry the access token (`name?token=…`); `url_token` is one the connection brought
    /// otherwise (a WebSocket URL's). With `keys`, the token must grant publishing the name.
    pub fn claim(
        hub: &Hub,
        app: &str,
        key: &str,
        proto: Protocol,
        transcode: bool,
        access: &crate::access::Access,
        url_token: Option<&str>,
    ) -> Result<FlvPublish, String> {
        let (key, token) = crate::access::split_token(key);
        let name = StreamName::parse(&format!("{app}/{key}"))
            .map_err(|e| format!("'{app}/{key}': {e}"))?;
        access
            .check_stream(
                token.or(url_token),
                name.as_str(),
                crate::access::StreamAction::Publish,
            )
            .map_err(|d| d.message().to_owned())?;
        let publisher = hub
            .publish(name, proto, Instant::now())
            .map_err(|e| e.to_string())?;
        Ok(FlvPublish {
            publisher,
            transcode,
            twin: None,
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &StreamName {
        self.publisher.name()
    }

    /// The hub's publisher (its `kicked()` says when another publisher took the name).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The publisher described its tracks (again).
    pub fn set_tracks(&mut self, mut tracks: Vec<TrackInfo>) {
        self.twin = None;
        if self.transcode
            && let Some(aac) = tracks
                .iter()
                .position(|t| t.codec == Codec::Aac && !t.config.is_empty())
        {
            match transcode::AacToOpus::new(&tracks[aac].config, transcode::OpusConfig::default()) {
                Ok(transcoder) => {
                    let mut opus = TrackInfo::new(Codec::Opus);
                    opus.sample_rate = Some(48_000);
                    opus.channels = tracks[aac].channels.map(|c| c.min(2));
                    tracks.push(opus);
                    self.twin = Some(AudioTwin {
                        aac,
                        opus: tracks.len() - 1,
                        transcoder,
                        errors: 0,
                    });
                }
                Err(e) => warn!(stream = %self.name(), "no Opus for WebRTC viewers: {e}"),
            }
        }
        self.publisher.set_tracks(tracks);
    }

    /// One frame (and its Opus twin's frames).
    pub fn push(&mut self, frame: Frame) {
        let p = &self.publisher;
        if let Some(twin) = &mut self.twin
            && frame.track == twin.aac
        {
            match twin.transcoder.push(&frame.data, frame.pts) {
                Ok(packets) => {
                    for o in packets {
                        p.push(Frame {
                            track: twin.opus,
                            pts: o.pts_us,
                            dts: o.pts_us,
                            keyframe: true,
                            data: o.data.into(),
                        });
                    }
                }
                Err(e) => {
                    twin.errors += 1;
                    // One line per burst, not per frame.
                    if twin.errors.is_power_of_two() {
                        warn!(stream = %p.name(), errors = twin.errors, "AAC → Opus: {e}");
                    }
                }
            }
        }
        p.push(frame);
    }
}
