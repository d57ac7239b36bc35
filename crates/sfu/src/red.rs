//! RFC 2198 redundant audio (RED), as Chromium sends Opus when `red/48000/2` is negotiated: each
//! packet carries the previous frame(s) again beside its own, so a lost packet's audio comes
//! back with the next one and nothing waits for a retransmission.
//!
//! The SFU forwards RED packets as they are to subscribers that negotiated RED too; for one that
//! did not (and for the hub: recording, HLS, WHEP viewers of hub streams) it takes out the
//! primary block.
//! Written here rather than taken from a crate: it is one header walk, and str0m (which
//! negotiates RED) has no depacketizer for it in RTP mode.
//!
//! ```text
//! redundant block header (4 bytes)        primary block header (1 byte)
//! |1| block PT | timestamp offset (14) | length (10) |      |0| block PT |
//! ```
//! The headers come first, all redundant ones then the primary's; then the blocks' data in the
//! same order, the primary's last and running to the end of the payload.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

/// Why a payload is not RED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedError {
    /// The payload ends inside the block headers.
    TruncatedHeaders,
    /// The redundant blocks' lengths run past the end of the payload.
    LengthsTooLong,
}

impl std::fmt::Display for RedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedError::TruncatedHeaders => "RED payload ends inside its block headers",
            RedError::LengthsTooLong => "RED block lengths run past the end of the payload",
        })
    }
}

impl std::error::Error for RedError {}

/// One block of a RED payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The payload type of the block's own codec (the primary's, for Opus in Chromium).
    pub pt: u8,
    /// How far before the packet's timestamp this block's media starts (0 for the primary).
    pub timestamp_offset: u16,
    /// Where the block's data is in the payload.
    pub data: Range<usize>,
}

/// Every block of a RED payload, redundant ones first (oldest first), the primary last.
pub fn blocks(payload: &[u8]) -> Result<Vec<Block>, RedError> {
    let mut headers = Vec::new();
    let mut at = 0;
    loop {
        let Some(&first) = payload.get(at) else {
            return Err(RedError::TruncatedHeaders);
        };
        let pt = first & 0x7f;
        if first & 0x80 == 0 {
            headers.push((pt, 0u16, None));
            at += 1;
            break;
        }
        let Some(h) = payload.get(at..at + 4) else {
            return Err(RedError::TruncatedHeaders);
        };
        let offset = (u16::from(h[1]) << 6) | (u16::from(h[2]) >> 2);
        let len = (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        headers.push((pt, offset, Some(len)));
        at += 4;
    }
    let mut out = Vec::with_capacity(headers.len());
    for (pt, timestamp_offset, len) in headers {
        let end = match len {
            Some(len) => at + len,
            None => payload.len(),
        };
        if end > payload.len() {
            return Err(RedError::LengthsTooLong);
        }
        out.push(Block {
            pt,
            timestamp_offset,
            data: at..end,
        });
        at = end;
    }
    Ok(out)
}

/// Where the primary block's data is: what a receiver without RED gets.
pub fn primary(payload: &[u8]) -> Result<Range<usize>, RedError> {
    blocks(payload).map(|b| b.last().map_or(0..0, |p| p.data.clone()))
}

/// Builds a RED payload: `redundant` earlier frames (their RTP timestamps and data, oldest
/// first) and the primary, all of payload type `pt`, for a packet stamped `ts`. A frame that
/// RED cannot carry (more than 16383 timestamp units back, 1024 bytes or more) is left out.
pub fn build(pt: u8, ts: u32, redundant: &[(u32, &[u8])], primary: &[u8]) -> Vec<u8> {
    let pt = pt & 0x7f;
    let fits = |(t, d): &&(u32, &[u8])| ts.wrapping_sub(*t) < 1 << 14 && d.len() < 1 << 10;
    let kept: Vec<&(u32, &[u8])> = redundant.iter().filter(fits).collect();
    let len = kept.iter().map(|(_, d)| 4 + d.len()).sum::<usize>() + 1 + primary.len();
    let mut out = Vec::with_capacity(len);
    for (t, d) in &kept {
        let offset = ts.wrapping_sub(*t) as u16;
        let n = d.len();
        out.extend_from_slice(&[
            0x80 | pt,
            (offset >> 6) as u8,
            (((offset & 0x3f) << 2) as u8) | (n >> 8) as u8,
            n as u8,
        ]);
    }
    out.push(pt);
    for (_, d) in &kept {
        out.extend_from_slice(d);
    }
    out.extend_from_slice(primary);
    out
}

/// A copy of a RED payload with every block's payload type set to `pt` (for a receiver that
/// numbered the codec otherwise). A payload that is not RED is copied as it is.
pub fn retag(payload: &[u8], pt: u8) -> Vec<u8> {
    let mut out = payload.to_vec();
    if blocks(payload).is_err() {
        return out;
    }
    let mut at = 0;
    while let Some(b) = out.get_mut(at) {
        let redundant = *b & 0x80 != 0;
        *b = (*b & 0x80) | (pt & 0x7f);
        if !redundant {
            break;
        }
        at += 4;
    }
    out
}

/// The last frames of one RED audio track, to send each packet on with the two frames before
/// it (Chromium sends one): a subscriber then hears through two losses in a row on its own link,
/// and a frame lost on the publisher's link (taken from the next packet's redundancy) travels
/// on in ours.
#[derive(Debug, Default)]
pub struct RedHistory {
    /// (sequence number, RTP timestamp, frame), oldest first, at most [`RedHistory::DEPTH`].
    frames: VecDeque<(u64, u32, Arc<[u8]>)>,
}

impl RedHistory {
    /// Frames repeated in each packet.
    pub const DEPTH: u64 = 2;

    /// The payload to send for RED packet `seq` (stamped `ts`) that came as `whole`, whose
    /// primary block is `primary`. `None`: send it as it came (a late packet, or not RED).
    pub fn rebuild(
        &mut self,
        seq: u64,
        ts: u32,
        whole: &[u8],
        primary: &Arc<[u8]>,
    ) -> Option<Arc<[u8]>> {
        let blocks = blocks(whole).ok()?;
        let (last, redundant) = blocks.split_last()?;
        let newest = self.frames.back().map(|f| f.0);
        if newest.is_some_and(|n| seq <= n) {
            return None;
        }
        // What this packet repeats that we do not have: lost on the publisher's link.
        let n = redundant.len() as u64;
        for (i, b) in redundant.iter().enumerate() {
            let Some(at) = seq.checked_sub(n - i as u64) else {
                continue;
            };
            if newest.is_some_and(|x| at <= x) || b.data.is_empty() || b.pt != last.pt {
                continue;
            }
            let t = ts.wrapping_sub(u32::from(b.timestamp_offset));
            self.frames
                .push_back((at, t, Arc::from(&whole[b.data.clone()])));
        }
        let before: Vec<(u32, &[u8])> = self
            .frames
            .iter()
            .filter(|f| f.0 < seq && f.0 + Self::DEPTH >= seq)
            .map(|f| (f.1, &f.2[..]))
            .collect();
        let out: Arc<[u8]> = build(last.pt, ts, &before, primary).into();
        self.frames.push_back((seq, ts, primary.clone()));
        while self.frames.len() as u64 > Self::DEPTH {
            self.frames.pop_front();
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RED payload as Chromium builds it: one redundant Opus frame (PT 111, 960 samples
    /// earlier) and the primary.
    fn chromium_like(redundant: &[u8], primary: &[u8]) -> Vec<u8> {
        let offset: u16 = 960;
        let len = redundant.len();
        let mut p = vec![
            0x80 | 111,
            (offset >> 6) as u8,
            (((offset & 0x3f) << 2) as u8) | (len >> 8) as u8,
            len as u8,
            111,
        ];
        p.extend_from_slice(redundant);
        p.extend_from_slice(primary);
        p
    }

    #[test]
    fn the_primary_and_the_redundant_block_are_found() {
        let p = chromium_like(&[1, 2, 3], &[9, 8, 7, 6]);
        let b = blocks(&p).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].pt, b[0].timestamp_offset), (111, 960));
        assert_eq!(&p[b[0].data.clone()], &[1, 2, 3]);
        assert_eq!((b[1].pt, b[1].timestamp_offset), (111, 0));
        assert_eq!(&p[primary(&p).unwrap()], &[9, 8, 7, 6]);
    }

    #[test]
    fn a_packet_with_only_the_primary_is_one_byte_longer_than_it() {
        let p = [111, 5, 6];
        assert_eq!(&p[primary(&p).unwrap()], &[5, 6]);
        // And an empty primary (DTX) is fine.
        assert_eq!(primary(&[111]).unwrap(), 1..1);
    }

    #[test]
    fn a_built_payload_reads_back_and_blocks_red_cannot_carry_are_left_out() {
        let p = build(111, 10_000, &[(8_080, &[1, 2]), (9_040, &[3])], &[7, 8, 9]);
        let b = blocks(&p).unwrap();
        let got: Vec<(u8, u16, &[u8])> = b
            .iter()
            .map(|b| (b.pt, b.timestamp_offset, &p[b.data.clone()]))
            .collect();
        assert_eq!(
            got,
            vec![
                (111, 1920, &[1u8, 2][..]),
                (111, 960, &[3][..]),
                (111, 0, &[7, 8, 9][..])
            ]
        );
        // Too far back (2^14 units), too big (1024 bytes): only the primary is left.
        let big = vec![0u8; 1024];
        let p = build(
            111,
            20_000,
            &[(20_000 - 16_384, &[1]), (19_040, &big)],
            &[5],
        );
        assert_eq!(p, vec![111, 5]);
    }

    #[test]
    fn each_packet_goes_on_with_the_two_frames_before_it_lost_ones_included() {
        let mut h = RedHistory::default();
        let frame = |n: u8| -> Arc<[u8]> { Arc::from(&[n, n][..]) };
        let send = |h: &mut RedHistory, seq: u64, prev: Option<u8>| {
            let ts = seq as u32 * 960;
            let before = [seq as u8 - 1; 2];
            let red: Vec<(u32, &[u8])> = match prev {
                Some(_) => vec![(ts - 960, &before[..])],
                None => vec![],
            };
            let whole = build(111, ts, &red, &frame(seq as u8));
            let out = h.rebuild(seq, ts, &whole, &frame(seq as u8)).unwrap();
            let b = blocks(&out).unwrap();
            b.iter()
                .map(|b| (b.timestamp_offset, out[b.data.start]))
                .collect::<Vec<_>>()
        };
        assert_eq!(send(&mut h, 1, None), vec![(0, 1)]);
        assert_eq!(send(&mut h, 2, Some(1)), vec![(960, 1), (0, 2)]);
        assert_eq!(send(&mut h, 3, Some(2)), vec![(1920, 1), (960, 2), (0, 3)]);
        // 4 was lost on the way in: 5 carries it, and so it is sent on with 5 and 6.
        assert_eq!(send(&mut h, 5, Some(4)), vec![(1920, 3), (960, 4), (0, 5)]);
        assert_eq!(send(&mut h, 6, Some(5)), vec![(1920, 4), (960, 5), (0, 6)]);
        // A late packet goes as it came.
        let late = build(111, 4 * 960, &[], &frame(4));
        assert!(h.rebuild(4, 4 * 960, &late, &frame(4)).is_none());
    }

    #[test]
    fn retagging_renames_every_block_and_keeps_the_data() {
        let p = build(111, 1920, &[(0, &[1]), (960, &[2, 3])], &[4]);
        let r = retag(&p, 109);
        let b = blocks(&r).unwrap();
        assert!(b.iter().all(|b| b.pt == 109));
        assert_eq!(b.len(), 3);
        assert_eq!(&r[b[2].data.clone()], &[4]);
        assert_eq!(r.len(), p.len());
        // Not RED: unchanged.
        assert_eq!(retag(&[0x80], 109), vec![0x80]);
    }

    #[test]
    fn lying_lengths_and_cut_headers_are_errors_not_panics() {
        assert_eq!(primary(&[]), Err(RedError::TruncatedHeaders));
        assert_eq!(
            primary(&[0x80 | 111, 0, 0]),
            Err(RedError::TruncatedHeaders)
        );
        // Redundant headers only, never a primary header.
        assert_eq!(
            primary(&[0x80 | 111, 0, 0, 0, 0x80 | 111, 0, 0, 0]),
            Err(RedError::TruncatedHeaders)
        );
        // A redundant block of 1023 bytes in a 10-byte payload.
        assert_eq!(
            primary(&[0x80 | 111, 0, 3, 0xff, 111, 1, 2, 3, 4, 5]),
            Err(RedError::LengthsTooLong)
        );
        // Every byte string of up to 3 bytes: an answer, never a panic.
        for a in 0..=255u8 {
            for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                let _ = blocks(&[a]);
                let _ = blocks(&[a, b]);
                let _ = blocks(&[a, b, b, a, b]);
            }
        }
    }
}
