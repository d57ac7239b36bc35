//! Any AAC rate to Opus's 48 kHz, with rubato's band-limited (windowed sinc) resampler.
//!
//! rubato's asynchronous sinc resampler is used with a fixed ratio; its FFT resampler would be
//! cheaper per sample but pulls in rustfft and friends, and the sinc one costs little next to
//! the Opus encoder (see `examples/cost.rs`).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::TranscodeError;

pub(crate) const OUT_RATE: u32 = 48_000;

pub(crate) struct To48k {
    inner: Async<f32>,
    channels: usize,
    /// Interleaved input not yet consumed (the resampler takes fixed-size chunks).
    pending: Vec<f32>,
    /// Scratch for one chunk of output.
    out: Vec<f32>,
    /// Output frames still to drop: the filter's delay. Dropping them lines the output up with
    /// the input's timestamps, so lip sync does not depend on the source rate.
    to_trim: usize,
}

impl To48k {
    /// `chunk`: frames per AAC access unit, so one push normally makes one resampler call.
    pub(crate) fn new(
        rate_in: u32,
        channels: usize,
        chunk: usize,
    ) -> Result<To48k, TranscodeError> {
        // 128 taps with a Blackman-Harris window: aliasing far below what a 64-128 kbit/s Opus
        // stream keeps, at a cost the Opus encoder dwarfs.
        let params = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
            .oversampling_factor(128)
            .interpolation(SincInterpolationType::Cubic);
        let ratio = f64::from(OUT_RATE) / f64::from(rate_in);
        let inner = Async::<f32>::new_sinc(ratio, 1.0, &params, chunk, channels, FixedAsync::Input)
            .map_err(|e| TranscodeError::Resampler {
                reason: e.to_string(),
            })?;
        let out = vec![0.0; inner.output_frames_max() * channels];
        let to_trim = inner.output_delay();
        Ok(To48k {
            inner,
            channels,
            pending: Vec::with_capacity(chunk * channels * 2),
            out,
            to_trim,
        })
    }

    /// Resamples interleaved `input`, appending whatever 48 kHz frames are ready to `dst`.
    pub(crate) fn push(&mut self, input: &[f32], dst: &mut Vec<f32>) -> Result<(), TranscodeError> {
        let ch = self.channels;
        self.pending.extend_from_slice(input);
        loop {
            let need = self.inner.input_frames_next();
            if self.pending.len() < need * ch {
                return Ok(());
            }
            let out_frames = self.out.len() / ch;
            let inbuf = InterleavedSlice::new(&self.pending[..need * ch], ch, need)
                .map_err(|e| resample_error(&e))?;
            let mut outbuf = InterleavedSlice::new_mut(&mut self.out[..], ch, out_frames)
                .map_err(|e| resample_error(&e))?;
            let (used, made) = self
                .inner
                .process_into_buffer(&inbuf, &mut outbuf, None)
                .map_err(|e| resample_error(&e))?;
            let skip = self.to_trim.min(made);
            self.to_trim -= skip;
            dst.extend_from_slice(&self.out[skip * ch..made * ch]);
            self.pending.drain(..used * ch);
        }
    }

    /// Forgets buffered audio, as after a timestamp jump.
    pub(crate) fn reset(&mut self) {
        self.inner.reset();
        self.pending.clear();
        self.to_trim = self.inner.output_delay();
    }
}

fn resample_error(e: &dyn std::fmt::Display) -> TranscodeError {
    TranscodeError::Resampler {
        reason: e.to_string(),
    }
}
