//! `vlu`: the variable-length unsigned integer of RTWebSocket (RFC 7016 §2.1.2): big-endian
//! base 128, the high bit set on every byte but the last. 2800 is `95 70`.

use crate::WireError;

/// The longest encoding of a `u64`: ten groups of seven bits.
const MAX_BYTES: usize = 10;

/// Appends `v` to `out`.
pub fn write(v: u64, out: &mut Vec<u8>) {
    let mut groups = [0u8; MAX_BYTES];
    let mut n = 0;
    let mut rest = v;
    loop {
        groups[n] = (rest & 0x7f) as u8;
        n += 1;
        rest >>= 7;
        if rest == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(groups[i] | if i > 0 { 0x80 } else { 0 });
    }
}

/// Bytes `v` takes on the wire.
pub fn len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
}

/// Reads one from the front of `data`, which moves past it.
pub fn read(data: &mut &[u8]) -> Result<u64, WireError> {
    let mut v: u64 = 0;
    for (i, &b) in data.iter().enumerate() {
        if i == MAX_BYTES || v > (u64::MAX >> 7) {
            return Err(WireError::VluTooLong);
        }
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            *data = &data[i + 1..];
            return Ok(v);
        }
    }
    Err(WireError::VluTruncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write(v, &mut out);
        out
    }

    #[test]
    fn the_spec_examples_and_the_edges() {
        assert_eq!(enc(2800), [0x95, 0x70]);
        assert_eq!(enc(2_097_151), [0xff, 0xff, 0x7f]);
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x81, 0x00]);
        assert_eq!(enc(16_777_215), [0x87, 0xff, 0xff, 0x7f]);
        for v in [0, 1, 127, 128, 2800, 65_536, 2_097_151, 1 << 40, u64::MAX] {
            let e = enc(v);
            assert_eq!(e.len(), len(v), "{v}");
            let mut s = &e[..];
            assert_eq!(read(&mut s), Ok(v));
            assert!(s.is_empty());
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        assert_eq!(read(&mut &[][..]), Err(WireError::VluTruncated));
        assert_eq!(read(&mut &[0x81, 0x80][..]), Err(WireError::VluTruncated));
        // More than 64 bits' worth.
        assert_eq!(read(&mut &[0xff; 11][..]), Err(WireError::VluTooLong));
        let mut over = vec![0x82];
        over.extend([0x80; 8]);
        over.push(0x00); // 2 << 63: one bit too many
        assert_eq!(read(&mut &over[..]), Err(WireError::VluTooLong));
    }
}
