//! RFC 2198 redundant audio (RED), as Chromium sends Opus when `red/48000/2` is negotiated: each
//! packet carries the previous frame(s) again beside its own, so a lost packet's audio comes
//! back with the next one and nothing waits for a retransmission.
//!
//! The SFU forwards RED packets as they are to subscribers that negotiated RED too; for one that
//! did not (and for the hub: recording, HLS, WHEP frame mode) it takes out the primary block.
//! Written here rather than taken from a crate: it is one header walk, and str0m (which
//! negotiates RED) has no depacketizer for it in RTP mode.
//!
//! ```text
//! redundant block header (4 bytes)        primary block header (1 byte)
//! |1| block PT | timestamp offset (14) | length (10) |      |0| block PT |
//! ```
//! The headers come first, all redundant ones then the primary's; then the blocks' data in the
//! same order, the primary's last and running to the end of the payload.

use std::ops::Range;

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
