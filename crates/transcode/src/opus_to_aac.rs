//! Opus to AAC-LC, so that a WebRTC source plays in native HLS players that only take AAC
//! (Safari on iOS and macOS before Opus in fMP4 came to them).
//!
//! opus-pure decodes to 48 kHz float PCM; syom (pure Rust, no dependencies) encodes AAC-LC at
//! 48 kHz, so no resampling is needed. The encoder works on 1024-sample frames and delays its
//! output by one frame (its priming); the timestamps below account for that, so the AAC stays
//! in sync with the video it was sent with.

use opus_pure::OpusDecoder as Decoder;

use crate::TranscodeError;

/// AAC frame length at 48 kHz, in samples per channel.
const AAC_FRAME: i64 = 1024;
const RATE: i64 = 48_000;
/// The longest Opus packet: 120 ms at 48 kHz, per channel.
const MAX_OPUS_SAMPLES: usize = 5760;
/// Timestamps this close to where the samples put them are the same instant (µs rounding).
const SLACK_US: i64 = 2_000;
/// A gap up to this long is filled with silence (Opus DTX sends nothing while nobody speaks,
/// and a lost packet leaves a hole); a longer one, or a jump back, starts a new timeline.
const MAX_GAP_US: i64 = 2_000_000;
/// A packet this far behind the timeline is a late duplicate or reordered: dropped.
const LATE_US: i64 = 200_000;

/// AAC encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Target bitrate in bit/s per channel.
    pub bitrate_per_channel: u32,
}

impl Default for AacConfig {
    fn default() -> Self {
        // AAC-LC is near transparent for speech and most music at 64 kbit/s per channel.
        AacConfig {
            bitrate_per_channel: 64_000,
        }
    }
}

/// One AAC access unit (raw, no ADTS header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacFrame {
    pub data: Vec<u8>,
    /// Presentation time of the unit's first sample, on the input's timeline, in microseconds.
    pub pts_us: i64,
    pub duration_us: i64,
}

/// Opus packets in, AAC access units out.
///
/// ```no_run
/// use transcode::{AacConfig, OpusToAac};
///
/// # fn main() -> Result<(), transcode::TranscodeError> {
/// let mut transcoder = OpusToAac::new(2, AacConfig::default())?;
/// // The track's description: an MP4 `esds` / HLS `mp4a.40.2` AudioSpecificConfig.
/// let asc = transcoder.asc().to_vec();
/// # let (opus_packet, pts_us): (&[u8], i64) = (&[], 0);
/// for unit in transcoder.push(opus_packet, pts_us)? {
///     let _ = (unit.data, unit.pts_us, unit.duration_us, &asc);
/// }
/// # Ok(())
/// # }
/// ```
pub struct OpusToAac {
    channels: usize,
    config: AacConfig,
    decoder: Decoder,
    encoder: syom::Encoder,
    /// One decoded packet, interleaved.
    decoded: Vec<f32>,
    /// The same, one plane per channel, as the encoder takes it.
    planes: [Vec<f32>; 2],
    clock: Option<Clock>,
    /// Units made while a push failed (the silence before a corrupt packet, its
    /// concealment): they go out with the next push.
    held: Vec<AacFrame>,
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    anchor_us: i64,
    /// Samples (per channel) fed to the encoder since the anchor.
    fed: i64,
    /// Access units out since the anchor.
    units: i64,
}

impl OpusToAac {
    /// `channels`: 1 or 2 (a WebRTC Opus track is described as 2 even when mono is sent; the
    /// decoder decodes it to what is asked).
    pub fn new(channels: u8, config: AacConfig) -> Result<OpusToAac, TranscodeError> {
        if !matches!(channels, 1 | 2) {
            return Err(TranscodeError::UnsupportedOpusChannels { channels });
        }
        let n = usize::from(channels);
        let decoder = Decoder::new(48_000, n).map_err(|e| TranscodeError::OpusDecoderInit {
            reason: crate::pure_reason(&e),
        })?;
        Ok(OpusToAac {
            channels: n,
            config,
            decoder,
            encoder: new_encoder(n, config)?,
            decoded: vec![0.0; MAX_OPUS_SAMPLES * n],
            planes: [Vec::new(), Vec::new()],
            clock: None,
            held: Vec::new(),
        })
    }

    /// The AudioSpecificConfig of the AAC this makes (AAC-LC, 48 kHz, the channel count).
    pub fn asc(&self) -> &[u8] {
        self.encoder.asc()
    }

    /// One Opus packet and its presentation time in microseconds.
    ///
    /// Returns the AAC units completed (21.3 ms each; none or one per 20 ms packet, mostly).
    /// A gap in the timestamps up to 2 s is filled with silence, a packet far behind is dropped,
    /// and a jump beyond that starts a new timeline. A packet the decoder cannot decode gives
    /// [`TranscodeError::OpusDecode`] and is replaced by the decoder's concealment, which comes out
    /// with the next push.
    pub fn push(&mut self, opus: &[u8], pts_us: i64) -> Result<Vec<AacFrame>, TranscodeError> {
        let mut out = std::mem::take(&mut self.held);
        let Some(at) = self.place(pts_us)? else {
            return Ok(out); // late
        };
        if at > 0 {
            self.silence(at, &mut out)?;
        }
        let ch = self.channels;
        let (samples, result) = match self
            .decoder
            .decode(opus, MAX_OPUS_SAMPLES, &mut self.decoded)
        {
            Ok(n) => (n, Ok(())),
            Err(e) => {
                // Conceal: an empty packet asks the decoder to make up 20 ms from its state.
                let n = self
                    .decoder
                    .decode(&[], 960, &mut self.decoded[..960 * ch])
                    .unwrap_or_else(|_| {
                        self.decoded[..960 * ch].fill(0.0);
                        960
                    });
                (
                    n,
                    Err(TranscodeError::OpusDecode {
                        len: opus.len(),
                        reason: crate::pure_reason(&e),
                    }),
                )
            }
        };
        for p in &mut self.planes {
            p.clear();
        }
        for frame in self.decoded[..samples * ch].chunks_exact(ch) {
            for (c, s) in frame.iter().enumerate() {
                // A decoder may overshoot full scale (far, on hostile packets); the encoder refuses |x| > 1.
                self.planes[c].push(s.clamp(-1.0, 1.0));
            }
        }
        self.encode_planes(&mut out)?;
        if result.is_err() {
            self.held = out;
            return result.map(|()| Vec::new());
        }
        Ok(out)
    }

    /// Where a packet stamped `pts_us` goes: the samples of silence to put before it, or
    /// `None` to drop it. Starts a new timeline when needed.
    fn place(&mut self, pts_us: i64) -> Result<Option<i64>, TranscodeError> {
        if let Some(c) = self.clock {
            let expected = c.anchor_us.saturating_add(c.fed * 1_000_000 / RATE);
            let ahead = pts_us.saturating_sub(expected);
            if ahead.abs() <= SLACK_US {
                return Ok(Some(0));
            }
            if (1..=MAX_GAP_US).contains(&ahead) {
                return Ok(Some(ahead * RATE / 1_000_000));
            }
            if (-LATE_US..0).contains(&ahead) {
                return Ok(None);
            }
            // The timeline broke: what the encoder holds (under one frame) is dropped.
            self.encoder = new_encoder(self.channels, self.config)?;
        }
        self.clock = Some(Clock {
            anchor_us: pts_us,
            fed: 0,
            units: 0,
        });
        Ok(Some(0))
    }

    fn silence(&mut self, samples: i64, out: &mut Vec<AacFrame>) -> Result<(), TranscodeError> {
        let n = usize::try_from(samples).unwrap_or(0);
        for p in self.planes.iter_mut().take(self.channels) {
            p.clear();
            p.resize(n, 0.0);
        }
        self.encode_planes(out)
    }

    fn encode_planes(&mut self, out: &mut Vec<AacFrame>) -> Result<(), TranscodeError> {
        let Some(clock) = &mut self.clock else {
            return Ok(());
        };
        let planes: Vec<&[f32]> = self.planes[..self.channels]
            .iter()
            .map(Vec::as_slice)
            .collect();
        let fed = planes.first().map_or(0, |p| p.len());
        let result = self.encoder.feed(&planes, |f| {
            // Unit k decodes to the input's samples from (k - 1) * 1024: the first is the
            // encoder's priming, stamped one frame before the first input sample.
            let k = clock.units;
            clock.units += 1;
            out.push(AacFrame {
                data: f.payload.to_vec(),
                pts_us: clock
                    .anchor_us
                    .saturating_add((k - 1) * AAC_FRAME * 1_000_000 / RATE),
                duration_us: AAC_FRAME * 1_000_000 / RATE,
            });
            Ok(())
        });
        clock.fed += fed as i64;
        if let Err(e) = result {
            // A failed encoder refuses everything after: start it again (and the timeline).
            self.encoder = new_encoder(self.channels, self.config)?;
            self.clock = None;
            return Err(TranscodeError::AacEncoder {
                reason: e.to_string(),
            });
        }
        Ok(())
    }
}

fn new_encoder(channels: usize, config: AacConfig) -> Result<syom::Encoder, TranscodeError> {
    let opts = syom::EncodeOptions::raw()
        .with_bitrate_bps(config.bitrate_per_channel.saturating_mul(channels as u32));
    syom::Encoder::new(RATE as u32, channels, &opts).map_err(|e| TranscodeError::AacEncoder {
        reason: e.to_string(),
    })
}
