//! H.264 access units into RTP payloads (RFC 6184, packetization-mode 1): each NAL unit whole
//! when it fits, else in FU-A fragments. Written here because str0m's packetizers are not
//! public, and a hub stream (RTMP) is packetized once per shard and the packets forwarded to
//! every viewer, instead of once per viewer in str0m's frame mode (hub_source.rs).

use std::sync::Arc;

use media::avc::AvcError;

/// The largest RTP payload made. With the RTP header and its extensions (~30 bytes), the SRTP
/// tag (10) and an RTX resend's two extra bytes, a packet stays under ~1,150 bytes, as str0m's
/// own packetizer keeps them (`DATAGRAM_MTU_TARGET`) and below what browsers send (~1,200).
/// Larger payloads mean fewer packets for the same stream: at 1,000 the RTMP fan-out sent 23 %
/// more packets than str0m's frame mode had for the same stream.
pub(crate) const MAX_PAYLOAD: usize = 1_100;

/// NAL unit types (H.264 table 7-1) a WebRTC receiver does without: access unit delimiters
/// and filler data.
const AUD: u8 = 9;
const FILLER: u8 = 12;
/// FU-A (RFC 6184 §5.8).
const FU_A: u8 = 28;

/// The RTP payloads of one access unit whose NAL units carry 4-byte length prefixes (the hub's
/// layout), `parameter_sets` (SPS and PPS, for a keyframe) first. The last payload ends the
/// frame (its packet takes the marker bit).
pub(crate) fn h264(
    parameter_sets: &[Vec<u8>],
    access_unit: &[u8],
    max_payload: usize,
) -> Result<Vec<Arc<[u8]>>, AvcError> {
    let mut out = Vec::with_capacity(access_unit.len() / max_payload + 3);
    for set in parameter_sets {
        nal(set, max_payload, &mut out);
    }
    for unit in media::avc::nal_units(access_unit, 4) {
        nal(unit?, max_payload, &mut out);
    }
    Ok(out)
}

fn nal(unit: &[u8], max_payload: usize, out: &mut Vec<Arc<[u8]>>) {
    let Some((&header, body)) = unit.split_first() else {
        return;
    };
    if matches!(header & 0x1f, AUD | FILLER) {
        return;
    }
    if unit.len() <= max_payload {
        out.push(Arc::from(unit));
        return;
    }
    // FU indicator: the NAL unit's F and NRI bits, type 28; FU header: start and end bits and
    // the NAL unit's type. The NAL header byte itself is not sent: it is rebuilt from these.
    let indicator = (header & 0xe0) | FU_A;
    let chunk = max_payload - 2;
    let count = body.len().div_ceil(chunk);
    for (i, part) in body.chunks(chunk).enumerate() {
        let start = if i == 0 { 0x80 } else { 0 };
        let end = if i + 1 == count { 0x40 } else { 0 };
        let mut p = Vec::with_capacity(part.len() + 2);
        p.push(indicator);
        p.push(start | end | (header & 0x1f));
        p.extend_from_slice(part);
        out.push(Arc::from(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixed(units: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for u in units {
            v.extend_from_slice(&(u.len() as u32).to_be_bytes());
            v.extend_from_slice(u);
        }
        v
    }

    #[test]
    fn small_units_go_whole_after_the_parameter_sets_and_delimiters_are_left_out() {
        let sets = vec![vec![0x67, 1, 2], vec![0x68, 3]];
        let au = prefixed(&[&[0x09, 0xf0], &[0x65, 9, 9, 9]]);
        let p = h264(&sets, &au, 100).unwrap();
        let p: Vec<&[u8]> = p.iter().map(|p| &p[..]).collect();
        assert_eq!(p, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 9, 9, 9]]);
    }

    #[test]
    fn a_large_unit_is_cut_into_fu_a_fragments_that_rebuild_it() {
        let unit: Vec<u8> = std::iter::once(0x65)
            .chain((0..2_500u32).map(|i| i as u8))
            .collect();
        let p = h264(&[], &prefixed(&[&unit]), 1_000).unwrap();
        assert_eq!(p.len(), 3, "2,500 bytes of body in 998-byte fragments");
        assert!(p.iter().all(|p| p.len() <= 1_000));
        assert_eq!(
            p[0][..2],
            [0x60 | FU_A, 0x80 | 5],
            "start, type 5, NRI kept"
        );
        assert_eq!(p[1][1], 5, "middle: neither start nor end");
        assert_eq!(p[2][1], 0x40 | 5, "end");
        let mut rebuilt = vec![(p[0][0] & 0xe0) | (p[0][1] & 0x1f)];
        for f in &p {
            rebuilt.extend_from_slice(&f[2..]);
        }
        assert_eq!(rebuilt, unit);
    }

    #[test]
    fn a_lying_length_is_an_error() {
        let mut au = prefixed(&[&[0x41, 1, 2, 3]]);
        au[3] = 200;
        assert!(matches!(
            h264(&[], &au, 1_000),
            Err(AvcError::NalOverrun { claimed: 200, .. })
        ));
    }
}
