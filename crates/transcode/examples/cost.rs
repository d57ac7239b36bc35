//! CPU cost of transcoding one stream: the fraction of one core that one AAC → Opus stream needs,
//! and one Opus → AAC stream.
//!
//! `cargo run -p transcode --release --example cost`
//!
//! Transcodes the test fixtures (1 s each of a 440 Hz tone, AAC-LC 128 kbit/s stereo, at 48 kHz
//! and at 44.1 kHz) over and over for about 5 s of wall time and divides the time spent by the
//! audio produced. The transcoder is single-threaded, so wall time on an otherwise idle core is
//! its CPU time; run it on a quiet machine.

use std::time::{Duration, Instant};

use transcode::{AacConfig, AacToOpus, OpusConfig, OpusToAac, TranscodeError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (name, rate) in [
        ("sine440_48k_stereo.au", 48_000),
        ("sine440_44k1_stereo.au", 44_100),
    ] {
        let (asc, aus) = load(name)?;
        let (elapsed, audio_us) = run(&asc, &aus, rate, Duration::from_secs(5))?;
        let audio_s = audio_us as f64 / 1e6;
        let per_audio_s = elapsed.as_secs_f64() / audio_s;
        println!(
            "{name}: {audio_s:.0} s of audio in {:.2} s -> {:.2} ms of CPU per second of audio \
             ({:.2} % of one core per stream, ~{:.0} streams per core)",
            elapsed.as_secs_f64(),
            per_audio_s * 1e3,
            per_audio_s * 100.0,
            1.0 / per_audio_s,
        );
    }
    // Opus → AAC (`hls.aac_from_opus`): the 48 kHz fixture made into Opus first (not timed).
    let (asc, aus) = load("sine440_48k_stereo.au")?;
    let mut to_opus = AacToOpus::new(&asc, OpusConfig::default())?;
    let mut packets = Vec::new();
    for (i, au) in aus.iter().enumerate() {
        packets.extend(to_opus.push(au, i as i64 * 1024 * 1_000_000 / 48_000)?);
    }
    let mut t = OpusToAac::new(2, AacConfig::default())?;
    let (mut pts, mut audio_us) = (0i64, 0i64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        for p in &packets {
            for unit in t.push(&p.data, pts)? {
                audio_us += unit.duration_us;
                std::hint::black_box(&unit.data);
            }
            pts += p.duration_us;
        }
    }
    let per_audio_s = start.elapsed().as_secs_f64() / (audio_us as f64 / 1e6);
    println!(
        "Opus 48 kHz stereo -> AAC-LC 128 kbit/s: {:.2} ms of CPU per second of audio \
         ({:.2} % of one core per stream, ~{:.0} streams per core)",
        per_audio_s * 1e3,
        per_audio_s * 100.0,
        1.0 / per_audio_s,
    );
    Ok(())
}

/// Transcodes the fixture again and again until `budget` has passed; returns the time taken and
/// the microseconds of Opus audio produced.
fn run(
    asc: &[u8],
    aus: &[Vec<u8>],
    rate: i64,
    budget: Duration,
) -> Result<(Duration, i64), TranscodeError> {
    // One transcoder for the whole run, as for a live stream: the pts keep counting up.
    let mut t = AacToOpus::new(asc, OpusConfig::default())?;
    let mut frames: i64 = 0;
    let mut audio_us = 0;
    let start = Instant::now();
    while start.elapsed() < budget {
        for au in aus {
            let pts_us = frames * 1_000_000 / rate;
            frames += 1024;
            for packet in t.push(au, pts_us)? {
                audio_us += packet.duration_us;
                std::hint::black_box(&packet.data);
            }
        }
    }
    Ok((start.elapsed(), audio_us))
}

/// An AudioSpecificConfig and the access units that follow it.
type Fixture = (Vec<u8>, Vec<Vec<u8>>);

/// The fixture framing of tests/fixtures/README.md.
fn load(name: &str) -> Result<Fixture, Box<dyn std::error::Error>> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let data = std::fs::read(&path)?;
    let bad = || format!("{path}: truncated");
    let asc_len = usize::from(*data.first().ok_or_else(bad)?);
    let asc = data.get(1..1 + asc_len).ok_or_else(bad)?.to_vec();
    let mut aus = Vec::new();
    let mut rest = &data[1 + asc_len..];
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        aus.push(tail.get(..len).ok_or_else(bad)?.to_vec());
        rest = &tail[len..];
    }
    Ok((asc, aus))
}
