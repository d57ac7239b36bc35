//! Any FLV audio/video tag body: parsing never panics, and the H.264 helpers never panic on
//! whatever a sequence header or frame claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::avc::{self, AvcConfig};
use rtmp::flv::{AudioTag, VideoTag};

fuzz_target!(|data: &[u8]| {
    if let Ok(VideoTag::SequenceStart { config, .. }) = VideoTag::parse(data) {
        if let Ok(c) = AvcConfig::parse(config) {
            let _ = c.dimensions();
            let _ = avc::to_annex_b(&[], c.nal_length_size, Some(&c));
        }
    }
    if let Ok(VideoTag::Frame { data: au, .. }) = VideoTag::parse(data) {
        for size in [1, 2, 4] {
            let _ = avc::to_annex_b(au, size, None);
            let _ = avc::to_four_byte_lengths(au, size);
        }
    }
    let _ = AudioTag::parse(data);
    let _ = avc::sps_dimensions(data);
    let _ = media::aac::AudioSpecificConfig::parse(data);
});
