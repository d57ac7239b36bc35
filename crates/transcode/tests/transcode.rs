//! Real AAC made by FFmpeg (tests/fixtures) through the transcoder and back out of the Opus
//! decoder: the packets are counted and timed, and the decoded audio must still be a 440 Hz tone.

// clippy's allow-unwrap-in-tests does not reach the helpers below, which are test code all the same.
#![allow(clippy::unwrap_used)]

use opus_pure::OpusDecoder as Decoder;
use transcode::{AacToOpus, OpusConfig, OpusPacket, TranscodeError};

struct Fixture {
    asc: Vec<u8>,
    aus: Vec<Vec<u8>>,
    rate: u32,
    channels: usize,
}

/// Reads the framing described in tests/fixtures/README.md.
fn fixture(name: &str, rate: u32, channels: usize) -> Fixture {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let data = std::fs::read(&path).unwrap();
    let asc_len = data[0] as usize;
    let asc = data[1..1 + asc_len].to_vec();
    let mut aus = Vec::new();
    let mut i = 1 + asc_len;
    while i < data.len() {
        let len = u16::from_be_bytes([data[i], data[i + 1]]) as usize;
        aus.push(data[i + 2..i + 2 + len].to_vec());
        i += 2 + len;
    }
    Fixture {
        asc,
        aus,
        rate,
        channels,
    }
}

/// FLV carries milliseconds, so stamp the units the way an RTMP publisher would.
fn flv_pts_us(index: usize, rate: u32) -> i64 {
    (index as i64 * 1024 * 1000 / i64::from(rate)) * 1000
}

fn transcode(f: &Fixture, start_us: i64) -> Vec<OpusPacket> {
    let mut t = AacToOpus::new(&f.asc, OpusConfig::default()).unwrap();
    let mut out = Vec::new();
    for (i, au) in f.aus.iter().enumerate() {
        out.extend(t.push(au, start_us + flv_pts_us(i, f.rate)).unwrap());
    }
    out
}

/// 20 ms packets that `n` access units of 1024 samples at `rate` make at 48 kHz.
fn expected_packets(n: usize, rate: u32) -> i64 {
    n as i64 * 1024 * 48_000 / i64::from(rate) / 960
}

fn decode(packets: &[OpusPacket], channels: usize) -> Vec<f32> {
    let mut dec = Decoder::new(48_000, channels).unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0.0f32; 5760 * channels];
    for p in packets {
        let n = dec.decode(&p.data, 5760, &mut buf).unwrap();
        assert_eq!(n, 960, "each packet holds 20 ms");
        pcm.extend_from_slice(&buf[..n * channels]);
    }
    pcm
}

/// Power of `x` at frequency `f` (Goertzel), normalised so that a full-length sine of amplitude
/// A gives A²/2, i.e. its mean power.
fn goertzel_power(x: &[f32], f: f64, rate: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * f / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power / (x.len() as f64 * x.len() as f64)
}

/// Checks that channel `c` of the decoded audio is a 440 Hz tone: loud enough, its strongest
/// frequency within a few Hz of 440, and that frequency holding most of the energy.
fn assert_tone_440(pcm: &[f32], channels: usize, c: usize) {
    // Skip the first 100 ms: AAC priming, resampler and Opus start-up.
    let x: Vec<f32> = pcm
        .chunks_exact(channels)
        .map(|f| f[c])
        .skip(4800)
        .collect();
    assert!(
        x.len() >= 9600,
        "at least 200 ms to analyse, got {}",
        x.len()
    );
    let mean_power = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64;
    // FFmpeg's sine source has amplitude 1/8, mean power 1/128; `-ac 2` pans it to each
    // channel at -3 dB (FFmpeg's own decoder reads -24.2 dBFS RMS from the stereo fixtures).
    let source_power = if channels == 1 {
        1.0 / 128.0
    } else {
        1.0 / 256.0
    };
    let level_db = 10.0 * (mean_power / source_power).log10();
    assert!(
        level_db.abs() < 1.5,
        "channel {c}: level {level_db:.2} dB from the source's"
    );

    let (mut best_f, mut best_p) = (0.0, 0.0);
    let mut f = 50.0;
    while f <= 4000.0 {
        let p = goertzel_power(&x, f, 48_000.0);
        if p > best_p {
            (best_f, best_p) = (f, p);
        }
        f += 2.0;
    }
    assert!(
        (best_f - 440.0f64).abs() <= 4.0,
        "channel {c}: dominant frequency {best_f} Hz, expected 440"
    );
    let tone_share = goertzel_power(&x, 440.0, 48_000.0) / mean_power;
    assert!(
        tone_share > 0.9,
        "channel {c}: 440 Hz holds only {tone_share:.2} of the energy"
    );

    // And the plain way: a 440 Hz sine crosses zero 880 times a second.
    let crossings = x
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count() as f64;
    let per_second = crossings * 48_000.0 / x.len() as f64;
    assert!(
        (per_second - 880.0).abs() < 20.0,
        "channel {c}: {per_second} zero crossings/s, expected 880"
    );
}

fn assert_continuous(packets: &[OpusPacket], first_pts_us: i64) {
    assert_eq!(packets[0].pts_us, first_pts_us);
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.duration_us, 20_000);
        assert_eq!(p.pts_us, first_pts_us + i as i64 * 20_000, "packet {i}");
    }
}

fn check_fixture(f: &Fixture) {
    let start = 5_000_000;
    let packets = transcode(f, start);
    let expected = expected_packets(f.aus.len(), f.rate);
    assert!(
        (packets.len() as i64 - expected).abs() <= 1,
        "{} packets from {} AUs, expected {expected} ± 1",
        packets.len(),
        f.aus.len()
    );
    assert_continuous(&packets, start);
    // TOC byte, bit 2: the stereo flag follows the source's channel count.
    for p in &packets {
        assert_eq!(p.data[0] & 0x04 != 0, f.channels == 2);
    }
    let pcm = decode(&packets, f.channels);
    for c in 0..f.channels {
        assert_tone_440(&pcm, f.channels, c);
    }
}

#[test]
fn stereo_48k_transcodes_to_a_440_hz_tone() {
    check_fixture(&fixture("sine440_48k_stereo.au", 48_000, 2));
}

#[test]
fn stereo_44k1_is_resampled_and_stays_440_hz() {
    check_fixture(&fixture("sine440_44k1_stereo.au", 44_100, 2));
}

#[test]
fn mono_stays_mono() {
    check_fixture(&fixture("sine440_48k_mono.au", 48_000, 1));
}

#[test]
fn corrupt_frame_is_an_error_and_later_frames_transcode() {
    let f = fixture("sine440_44k1_stereo.au", 44_100, 2);
    let mut t = AacToOpus::new(&f.asc, OpusConfig::default()).unwrap();
    let mut packets = Vec::new();
    let bad = 20;
    for (i, au) in f.aus.iter().enumerate() {
        let pts = flv_pts_us(i, f.rate);
        if i == bad {
            // A truncated unit: the bitstream ends inside the first channel element.
            let err = t.push(&au[..4], pts).unwrap_err();
            assert!(
                matches!(err, TranscodeError::Decode { len: 4, .. }),
                "{err}"
            );
            continue;
        }
        packets.extend(t.push(au, pts).unwrap());
    }
    // The bad unit became silence: the timeline has its full length and no hole.
    let expected = expected_packets(f.aus.len(), f.rate);
    assert!((packets.len() as i64 - expected).abs() <= 1);
    assert_continuous(&packets, 0);
    // Audio after the bad frame (from 25 AUs on, ~580 ms) is the tone again.
    let after: Vec<OpusPacket> = packets
        .iter()
        .filter(|p| p.pts_us >= flv_pts_us(bad + 4, f.rate))
        .cloned()
        .collect();
    let pcm = decode(&after, 2);
    assert_tone_440(&pcm, 2, 0);
}

#[test]
fn garbage_never_panics_and_the_stream_recovers() {
    let f = fixture("sine440_48k_stereo.au", 48_000, 2);
    let mut t = AacToOpus::new(&f.asc, OpusConfig::default()).unwrap();
    // xorshift: a fixed seed, so a failure replays.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut errors = 0;
    let mut pts = 0;
    for round in 0..400 {
        let mut au = f.aus[round % f.aus.len()].clone();
        match round % 4 {
            0 => {
                let i = rand() as usize % au.len();
                au[i] ^= 1 << (rand() % 8);
            }
            1 => au.truncate(rand() as usize % au.len()),
            2 => au.iter_mut().for_each(|b| *b = rand() as u8),
            _ => {
                for _ in 0..8 {
                    let i = rand() as usize % au.len();
                    au[i] = rand() as u8;
                }
            }
        }
        if t.push(&au, pts).is_err() {
            errors += 1;
        }
        pts += 21_333;
    }
    assert!(errors > 0, "some garbage must be refused");
    // Good frames afterwards still make a clean tone.
    let mut packets = Vec::new();
    for au in &f.aus {
        packets.extend(t.push(au, pts).unwrap());
        pts += 21_333;
    }
    let pcm = decode(&packets, 2);
    assert_tone_440(&pcm, 2, 0);
}

#[test]
fn pts_follow_samples_and_reanchor_on_a_jump() {
    let f = fixture("sine440_48k_stereo.au", 48_000, 2);
    let mut t = AacToOpus::new(&f.asc, OpusConfig::default()).unwrap();
    let mut packets = Vec::new();
    let jump_at = 24;
    for (i, au) in f.aus.iter().enumerate() {
        // Jitter of a few ms is ignored; a 2 s jump is followed.
        let jitter = if i % 3 == 0 { 4_000 } else { -3_000 };
        let jump = if i >= jump_at { 2_000_000 } else { 0 };
        packets.extend(t.push(au, flv_pts_us(i, 48_000) + jitter + jump).unwrap());
    }
    let split = packets.iter().position(|p| p.pts_us >= 2_000_000).unwrap();
    // Before the jump: sample-exact from the first pts (4 ms of jitter on unit 0).
    assert_continuous(&packets[..split], 4_000);
    // After: anchored on the unit that jumped, then continuous again.
    let anchor = flv_pts_us(jump_at, 48_000) + 4_000 + 2_000_000;
    assert_continuous(&packets[split..], anchor);
}

#[test]
fn bad_asc_is_refused() {
    let cfg = OpusConfig::default();
    let cases: [(&[u8], &str); 5] = [
        (&[], "too short"),
        (&[0x12], "too short"),
        (&[0x2B, 0x10, 0x88, 0x00], "object type 5"),
        (&[0x11, 0xB0], "channel configuration 6"),
        (&[0x16, 0x90], "sampling-frequency index 13"),
    ];
    for (asc, msg) in cases {
        let err = AacToOpus::new(asc, cfg).err().unwrap();
        assert!(err.to_string().contains(msg), "{asc:02x?}: {err}");
    }
    let err = AacToOpus::new(&[0x12, 0x10], OpusConfig { bitrate: 10 })
        .err()
        .unwrap();
    assert!(matches!(err, TranscodeError::BadBitrate { bitrate: 10 }));
}

#[test]
fn extreme_timestamps_do_not_panic() {
    let f = fixture("sine440_48k_stereo.au", 48_000, 2);
    let mut t = AacToOpus::new(&f.asc, OpusConfig::default()).unwrap();
    for (i, pts) in [i64::MAX, i64::MIN, 0, i64::MAX - 1, -1]
        .into_iter()
        .cycle()
        .take(f.aus.len())
        .enumerate()
    {
        t.push(&f.aus[i], pts).unwrap();
    }
}

// ------------------------------------------------------------------ Opus to AAC

/// Decodes AAC-LC units with symphonia, as a player would.
fn decode_aac(asc: &[u8], units: &[transcode::AacFrame], channels: usize) -> Vec<f32> {
    use symphonia_codec_aac::AacDecoder;
    use symphonia_core::audio::{Channels as SymChannels, Position};
    use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
    use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
    use symphonia_core::packet::PacketRef;
    use symphonia_core::units::{Duration, Timestamp};
    let layout = if channels == 1 {
        Position::FRONT_CENTER
    } else {
        Position::FRONT_LEFT | Position::FRONT_RIGHT
    };
    let mut params = AudioCodecParameters::new();
    params
        .for_codec(CODEC_ID_AAC)
        .with_sample_rate(48_000)
        .with_channels(SymChannels::Positioned(layout))
        .with_extra_data(asc.into());
    let mut dec = AacDecoder::try_new(&params, &AudioDecoderOptions::default()).unwrap();
    let mut pcm = Vec::new();
    let mut buf = Vec::new();
    for u in units {
        let packet = PacketRef::new(0, Timestamp::new(0), Duration::from(1024u64), &u.data);
        dec.decode_ref(&packet)
            .unwrap()
            .copy_to_vec_interleaved(&mut buf);
        assert_eq!(buf.len(), 1024 * channels, "each unit holds 1024 samples");
        pcm.extend_from_slice(&buf);
    }
    pcm
}

/// The fixture's tone as 20 ms Opus packets from `start_us`.
fn opus_tone(name: &str, channels: usize, start_us: i64) -> Vec<OpusPacket> {
    transcode(&fixture(name, 48_000, channels), start_us)
}

fn assert_units_continuous(units: &[transcode::AacFrame], first_pts_us: i64) {
    for (i, u) in units.iter().enumerate() {
        assert_eq!(u.duration_us, 21_333);
        let want = first_pts_us + (i as i64 - 1) * 1024 * 1_000_000 / 48_000;
        assert!(
            (u.pts_us - want).abs() <= 1,
            "unit {i}: {} for {want}",
            u.pts_us
        );
    }
}

#[test]
fn opus_becomes_aac_that_decodes_to_the_same_tone() {
    for (name, ch) in [("sine440_48k_stereo.au", 2), ("sine440_48k_mono.au", 1)] {
        let start = 3_000_000;
        let packets = opus_tone(name, ch, start);
        let mut t = transcode::OpusToAac::new(ch as u8, transcode::AacConfig::default()).unwrap();
        // AAC-LC (object type 2), 48 kHz (index 3), the channel count.
        assert_eq!(t.asc(), [0x11, 0x80 | (ch as u8) << 3]);
        let mut units = Vec::new();
        for p in &packets {
            units.extend(t.push(&p.data, p.pts_us).unwrap());
        }
        let samples = packets.len() as i64 * 960;
        // The priming unit comes first, so the last partial frame is still held.
        assert_eq!(units.len() as i64, samples / 1024, "{name}");
        // The first unit is the encoder's priming, a frame before the first sample.
        assert_units_continuous(&units, start);
        let pcm = decode_aac(t.asc(), &units, ch);
        for c in 0..ch {
            assert_tone_440(&pcm, ch, c);
        }
    }
}

#[test]
fn opus_gaps_are_filled_late_packets_dropped_and_a_jump_reanchors() {
    let packets = opus_tone("sine440_48k_stereo.au", 2, 0);
    let mut t = transcode::OpusToAac::new(2, transcode::AacConfig::default()).unwrap();
    let mut units = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        // DTX or loss: packets 10 to 19 never come; their 200 ms become silence.
        if (10..20).contains(&i) {
            continue;
        }
        units.extend(t.push(&p.data, p.pts_us).unwrap());
        if i == 30 {
            // A duplicate of a packet already placed: dropped, nothing comes out.
            assert!(t.push(&p.data, p.pts_us).unwrap().is_empty());
        }
    }
    // Every sample of the timeline, the silence included, is there, and in order.
    assert_eq!(units.len() as i64, packets.len() as i64 * 960 / 1024);
    assert_units_continuous(&units, 0);
    // A jump of 10 s starts a new timeline from the packet that jumped.
    let mut after = Vec::new();
    for p in &packets[..20] {
        after.extend(t.push(&p.data, p.pts_us + 60_000_000).unwrap());
    }
    assert_units_continuous(&after, 60_000_000);
    // Garbage is an error (concealed), never a panic, and the timeline goes on.
    let next = 60_000_000 + 20 * 20_000;
    assert!(t.push(&[0xff; 3], next).is_err());
    let more = t.push(&packets[0].data, next + 20_000).unwrap();
    assert!(more.iter().all(|u| u.pts_us > 60_000_000));
    assert!(matches!(
        transcode::OpusToAac::new(6, transcode::AacConfig::default()),
        Err(TranscodeError::UnsupportedOpusChannels { channels: 6 })
    ));
}

/// The Opus decoder faces packets from the network: random bytes and mutations of real packets
/// (bit flips, cut short, another TOC byte) are errors or concealment, never a panic, and the
/// AAC that comes out stays finite and bounded. A fixed seed: the same inputs
/// every run.
#[test]
fn hostile_opus_packets_never_panic_and_the_output_stays_in_range() {
    let real = opus_tone("sine440_48k_stereo.au", 2, 0);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for channels in [1u8, 2] {
        let mut t = transcode::OpusToAac::new(channels, transcode::AacConfig::default()).unwrap();
        let mut aac = Vec::new();
        for i in 0..3000i64 {
            let mut p = real[(next() as usize) % real.len()].data.clone();
            match next() % 4 {
                0 => p = (0..next() % 1500).map(|_| next() as u8).collect(),
                1 => {
                    for _ in 0..1 + next() % 8 {
                        let bit = (next() as usize) % (p.len() * 8);
                        p[bit / 8] ^= 1 << (bit % 8);
                    }
                }
                2 => p.truncate((next() as usize) % (p.len() + 1)),
                _ => p[0] = next() as u8,
            }
            // Errors are expected; what matters is that nothing panics and time goes on.
            if let Ok(units) = t.push(&p, i * 20_000) {
                aac.extend(units);
            }
        }
        assert!(
            aac.len() > 1000,
            "{} AAC units from 3000 packets",
            aac.len()
        );
        let pcm = decode_aac(t.asc(), &aac, usize::from(channels));
        // The encoder gets [-1, 1] (decoded Opus is clamped: hostile packets decode to 1e7 in
        // libopus too); AAC coding of full-scale noise overshoots (peaks near 2 here), but
        // nothing may come back infinite, NaN or blown up.
        let peak = pcm.iter().fold(0.0f32, |m, s| {
            if s.is_finite() {
                m.max(s.abs())
            } else {
                f32::INFINITY
            }
        });
        assert!(peak < 4.0, "decoded AAC out of range: peak {peak}");
    }
}
