//! Any bytes as RTP payloads of VP9 and AV1 (the depacketizers onair writes itself), and as
//! VP8/VP9 keyframes, AV1 temporal units and configuration records: nothing panics, and what
//! comes out is no bigger than what went in plus its framing.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use media::av1::{self, Av1Config};
use media::vp::{self, VpConfig};
use sfu::depacketize::Assembler;
use str0m::format::Codec;

fuzz_target!(|data: &[u8]| {
    let _ = vp::vp8_keyframe(data);
    let _ = vp::vp9_keyframe(data);
    let _ = VpConfig::parse_record(data);
    let _ = Av1Config::from_temporal_unit(data);
    let _ = Av1Config::from_sequence_header(data);
    let _ = Av1Config::parse_record(data);
    for obu in av1::obus(data) {
        if obu.is_err() {
            break;
        }
    }
    // The first byte splits the rest into packets: its bits say where one ends and whether
    // the marker (end of frame) is set.
    let Some((&plan, rest)) = data.split_first() else {
        return;
    };
    for codec in [Codec::Vp9, Codec::Av1] {
        let Some(mut a) = Assembler::new(codec, 90_000, 0) else {
            return;
        };
        let mut seq = 0u64;
        let chunk = usize::from(plan % 16) + 1;
        for (i, p) in rest.chunks(chunk).enumerate() {
            seq += 1;
            let marker = (plan >> (i % 8)) & 1 == 1;
            let ts = (i / 3) as u32 * 3000;
            if let Some(f) = a.push(seq, ts, marker, &Arc::from(p)) {
                assert!(f.data.len() <= rest.len() * 2 + 64);
            }
        }
    }
});
