//! Opus as onair transcodes it (48 kHz stereo, 20 ms frames, 64 kbit/s, application "audio"):
//! the CPU of encoding and decoding one second, and the quality of the round trip (SNR and
//! segmental SNR against the input, after the codec's 312-sample delay), for opus-pure, the
//! pure-Rust Opus onair uses. With `--features libopus-peer` (needs the system's libopus-dev)
//! libopus runs beside it in the same run, as the peer to compare with:
//!
//! ```sh
//! cargo bench -p bench --bench opus                          # opus-pure alone
//! cargo bench -p bench --bench opus --features libopus-peer  # and libopus beside it
//! ```
//!
//! Why opus-pure, and the fuller measurements (hostile packets, decoder agreement with
//! opus_compare, concealment): docs/audio.md.

use std::f32::consts::TAU;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

const RATE: usize = 48_000;
const FRAME: usize = 960;
const CH: usize = 2;
const BITRATE: i32 = 64_000;
/// Every encoder here (libopus's lookahead with its default settings) delays by this much.
const DELAY: usize = 312;

/// `secs` of a music-like test signal: a chord of harmonic tones whose loudness and balance
/// move, interleaved stereo, within ±0.5.
fn signal(secs: usize) -> Vec<f32> {
    let n = secs * RATE;
    let mut out = Vec::with_capacity(n * CH);
    for i in 0..n {
        let t = i as f32 / RATE as f32;
        let env = 0.55 + 0.45 * (TAU * 0.7 * t).sin();
        let mut l = 0.0;
        let mut r = 0.0;
        for (k, f) in [220.0f32, 277.2, 329.6, 440.0].iter().enumerate() {
            for h in 1..6 {
                let a = 0.04 / h as f32;
                let s = a * (TAU * f * h as f32 * t + k as f32).sin();
                let pan = 0.5 + 0.4 * (TAU * 0.2 * t + k as f32).sin();
                l += s * pan;
                r += s * (1.0 - pan);
            }
        }
        out.push(l * env);
        out.push(r * env);
    }
    out
}

/// An Opus implementation as the bench drives it.
trait Codec {
    const NAME: &'static str;
    fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> usize;
    /// Decodes one packet into `out` (interleaved), returning samples per channel.
    fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> usize;
}

struct Pure(opus_pure::OpusEncoder, opus_pure::OpusDecoder);

impl Pure {
    #[allow(clippy::unwrap_used)] // fixed, valid settings
    fn new() -> Pure {
        let mut e =
            opus_pure::OpusEncoder::new(RATE as i32, CH, opus_pure::Application::Audio).unwrap();
        e.bitrate_bps = BITRATE;
        Pure(e, opus_pure::OpusDecoder::new(RATE as i32, CH).unwrap())
    }
}

impl Codec for Pure {
    const NAME: &'static str = "opus-pure";
    fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> usize {
        self.0.encode(pcm, FRAME, out).unwrap_or(0)
    }
    fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> usize {
        self.1.decode(packet, out.len() / CH, out).unwrap_or(0)
    }
}

#[cfg(feature = "libopus-peer")]
struct Lib(opusic_c::Encoder, opusic_c::Decoder);

#[cfg(feature = "libopus-peer")]
impl Lib {
    #[allow(clippy::unwrap_used)] // fixed, valid settings
    fn new() -> Lib {
        use opusic_c::{Application, Bitrate, Channels, SampleRate};
        let mut e =
            opusic_c::Encoder::new(Channels::Stereo, SampleRate::Hz48000, Application::Audio)
                .unwrap();
        e.set_bitrate(Bitrate::Value(BITRATE as u32)).unwrap();
        Lib(
            e,
            opusic_c::Decoder::new(Channels::Stereo, SampleRate::Hz48000).unwrap(),
        )
    }
}

#[cfg(feature = "libopus-peer")]
impl Codec for Lib {
    const NAME: &'static str = "libopus";
    fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> usize {
        self.0.encode_float_to_slice(pcm, out).unwrap_or(0)
    }
    fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> usize {
        self.1
            .decode_float_to_slice(packet, out, false)
            .unwrap_or(0)
    }
}

fn encode_all<C: Codec>(c: &mut C, pcm: &[f32]) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 4000];
    pcm.chunks_exact(FRAME * CH)
        .map(|f| {
            let n = c.encode(f, &mut buf);
            buf[..n].to_vec()
        })
        .collect()
}

fn decode_all<C: Codec>(c: &mut C, packets: &[Vec<u8>]) -> Vec<f32> {
    let mut buf = vec![0f32; 5760 * CH];
    let mut out = Vec::new();
    for p in packets {
        let n = c.decode(p, &mut buf);
        out.extend_from_slice(&buf[..n * CH]);
    }
    out
}

/// SNR and segmental SNR (20 ms windows, each clamped to [-10, 60] dB) of `out` against `input`
/// delayed by [`DELAY`], from 100 ms on.
fn snr(input: &[f32], out: &[f32]) -> (f64, f64) {
    let skip = RATE / 10 * CH;
    let n = out.len().saturating_sub(DELAY * CH).min(input.len());
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    let mut segs = Vec::new();
    for w in (skip..n).step_by(FRAME * CH) {
        let end = (w + FRAME * CH).min(n);
        let (mut s, mut e) = (0.0f64, 0.0f64);
        for i in w..end {
            let x = f64::from(input[i]);
            let d = x - f64::from(out[i + DELAY * CH]);
            s += x * x;
            e += d * d;
        }
        sig += s;
        err += e;
        segs.push((10.0 * (s / e.max(1e-20)).log10()).clamp(-10.0, 60.0));
    }
    let seg = segs.iter().sum::<f64>() / segs.len().max(1) as f64;
    (10.0 * (sig / err.max(1e-20)).log10(), seg)
}

fn report<C: Codec>(mut c: C, input: &[f32]) {
    let packets = encode_all(&mut c, input);
    let bytes: usize = packets.iter().map(Vec::len).sum();
    let out = decode_all(&mut c, &packets);
    let (s, seg) = snr(input, &out);
    let secs = input.len() / CH / RATE;
    println!(
        "{:>10}: {:.1} kbit/s, round trip SNR {s:.2} dB, segmental SNR {seg:.2} dB",
        C::NAME,
        bytes as f64 * 8.0 / secs as f64 / 1000.0
    );
}

fn bench_codec<C: Codec>(crit: &mut Criterion, make: fn() -> C, input: &[f32]) {
    let one_second = &input[..RATE * CH];
    let packets = encode_all(&mut make(), one_second);
    crit.bench_function(&format!("{} encode 1 s stereo 64 kbit/s", C::NAME), |b| {
        let mut c = make();
        b.iter(|| encode_all(&mut c, black_box(one_second)))
    });
    crit.bench_function(&format!("{} decode 1 s stereo 64 kbit/s", C::NAME), |b| {
        let mut c = make();
        b.iter(|| decode_all(&mut c, black_box(&packets)))
    });
}

fn benches(c: &mut Criterion) {
    let input = signal(10);
    report(Pure::new(), &input);
    #[cfg(feature = "libopus-peer")]
    report(Lib::new(), &input);
    bench_codec(c, Pure::new, &input);
    #[cfg(feature = "libopus-peer")]
    bench_codec(c, Lib::new, &input);
}

criterion_group!(opus, benches);
criterion_main!(opus);
