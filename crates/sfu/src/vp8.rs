//! VP8 picture ids across simulcast switches.
//!
//! Each simulcast layer numbers its pictures on its own (RFC 7741 §4.2: PictureID, and
//! TL0PICIDX for the temporal base layer), from a random start. A subscriber sees one stream, so
//! when it is switched from one layer to another the ids jump, and Chromium's frame reference
//! finder and frame buffer take a jump backwards for frames they already decoded past (seen
//! here as a subscriber moved up from 360p to 720p that went on showing 360p for over 30 s
//! while the server sent 720p: issue 17's bandwidth test, about one run in three; mediasoup's
//! issue 140 is the same). SFUs renumber so that each layer's first picture continues one past
//! the last picture sent (mediasoup, LiveKit's VP8 munger); this does it per subscriber leg.
//! str0m parses the descriptor and applies the change while it serializes the packet
//! (`RtpWrite::vp8_patch`), so the shared payload is never copied.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// 15-bit picture ids wrap at this; 7-bit ones at 128.
const PID_MOD: u16 = 1 << 15;

/// `a` is later than `b` in a wrapping space of `modulus`.
fn newer(a: u16, b: u16, modulus: u16) -> bool {
    let d = a.wrapping_sub(b) % modulus;
    d != 0 && d < modulus / 2
}

/// The picture id's width: 15 bits when its first byte has M set (X=1, I=1: it is byte 2).
fn pid_modulus(payload: &[u8]) -> u16 {
    match payload {
        [b0, x, pid, ..] if b0 & 0x80 != 0 && x & 0x80 != 0 && pid & 0x80 == 0 => 128,
        _ => PID_MOD,
    }
}

/// One subscriber leg's renumbering of a VP8 track's picture ids.
#[derive(Debug, Default, Clone)]
pub(crate) struct Vp8Ids {
    /// The forwarder epoch the offsets were taken for (see `Forwarder::switches`).
    epoch: u64,
    pid_offset: u16,
    tl0_offset: u8,
    /// The latest picture id and TL0PICIDX sent, once something was.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

impl Vp8Ids {
    /// The change to make to a packet's descriptor, if any: none while the leg is on the first
    /// layer it got (it keeps its own ids), or when the descriptor cannot be read (sent as it
    /// came). `epoch` is the forwarder's count of epochs: the first packet of a new one (a
    /// keyframe of the new layer) takes ids one past the last sent, and the rest of the epoch
    /// keeps that offset.
    pub fn patch(&mut self, epoch: u64, payload: &[u8]) -> Option<Vp8Patch> {
        let d = Vp8Descriptor::parse(payload).ok()?;
        let (pid, tl0) =
            self.renumber(epoch, d.picture_id(), d.tl0_pic_idx(), pid_modulus(payload));
        if pid == d.picture_id() && tl0 == d.tl0_pic_idx() {
            return None;
        }
        let mut b = d.patch();
        if let Some(p) = pid {
            b = b.picture_id(p);
        }
        if let Some(t) = tl0 {
            b = b.tl0_pic_idx(t);
        }
        b.build().ok()
    }

    /// The ids a packet is sent with, given the ones it came with.
    fn renumber(
        &mut self,
        epoch: u64,
        pid_in: Option<u16>,
        tl0_in: Option<u8>,
        m: u16,
    ) -> (Option<u16>, Option<u8>) {
        if epoch != self.epoch {
            self.epoch = epoch;
            if let (Some(last), Some(pid)) = (self.last_pid, pid_in) {
                self.pid_offset = last.wrapping_add(1).wrapping_sub(pid) % m;
            }
            if let (Some(last), Some(tl0)) = (self.last_tl0, tl0_in) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        let pid = pid_in.map(|p| p.wrapping_add(self.pid_offset) % m);
        let tl0 = tl0_in.map(|t| t.wrapping_add(self.tl0_offset));
        if let Some(p) = pid
            && self.last_pid.is_none_or(|l| newer(p, l, m))
        {
            self.last_pid = Some(p);
        }
        if let Some(t) = tl0
            && self
                .last_tl0
                .is_none_or(|l| newer(u16::from(t), u16::from(l), 256))
        {
            self.last_tl0 = Some(t);
        }
        (pid, tl0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor as Chromium sends it: X, I with a 15-bit id, L, T; then a payload byte.
    fn packet(pid: u16, tl0: u8) -> Vec<u8> {
        vec![
            0x90,
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            0x20,
            0xaa,
        ]
    }

    fn ids(v: &mut Vp8Ids, epoch: u64, pid: u16, tl0: u8) -> (u16, u8) {
        let (p, t) = v.renumber(epoch, Some(pid), Some(tl0), PID_MOD);
        (p.unwrap(), t.unwrap())
    }

    #[test]
    fn the_first_layer_keeps_its_ids_and_needs_no_patch() {
        let mut v = Vp8Ids::default();
        assert!(v.patch(1, &packet(1000, 7)).is_none());
        assert!(v.patch(1, &packet(1001, 8)).is_none());
        // After a switch the descriptor is patched.
        assert!(v.patch(2, &packet(30, 1)).is_some());
    }

    #[test]
    fn a_switch_continues_one_past_the_last_ids_sent() {
        let mut v = Vp8Ids::default();
        ids(&mut v, 1, 20_000, 100);
        ids(&mut v, 1, 20_001, 100);
        // The new layer numbers from far behind; its keyframe must come after 20001.
        assert_eq!(ids(&mut v, 2, 300, 9), (20_002, 101));
        // The rest of its frame and the next frames keep that offset.
        assert_eq!(ids(&mut v, 2, 300, 9), (20_002, 101));
        assert_eq!(ids(&mut v, 2, 301, 9), (20_003, 101));
        assert_eq!(ids(&mut v, 2, 302, 10), (20_004, 102));
        // A late packet of an earlier picture of this epoch does not move the count back.
        assert_eq!(ids(&mut v, 2, 301, 9), (20_003, 101));
        assert_eq!(ids(&mut v, 3, 5, 0), (20_005, 103));
    }

    #[test]
    fn ids_wrap() {
        let mut v = Vp8Ids::default();
        ids(&mut v, 1, PID_MOD - 1, 255);
        assert_eq!(ids(&mut v, 2, 4000, 40), (0, 0));
        assert_eq!(ids(&mut v, 2, 4001, 41), (1, 1));
    }

    #[test]
    fn a_seven_bit_id_stays_seven_bits() {
        // X, I; M=0: a 7-bit id.
        assert_eq!(pid_modulus(&[0x90, 0x80, 0x05, 0xaa]), 128);
        assert_eq!(pid_modulus(&packet(5, 0)), PID_MOD);
        let mut v = Vp8Ids::default();
        v.renumber(1, Some(120), None, 128);
        assert_eq!(v.renumber(2, Some(3), None, 128).0, Some(121));
        for id in 4..=9 {
            v.renumber(2, Some(id), None, 128);
        }
        // 127 was the last: the next layer's first picture is 0.
        assert_eq!(v.renumber(3, Some(50), None, 128).0, Some(0));
        // And str0m takes the patch for a 7-bit descriptor.
        let mut v = Vp8Ids::default();
        v.patch(1, &[0x90, 0x80, 120, 0xaa]);
        assert!(v.patch(2, &[0x90, 0x80, 3, 0xaa]).is_some());
    }

    #[test]
    fn short_or_plain_descriptors_get_no_patch() {
        let mut v = Vp8Ids::default();
        v.patch(1, &packet(10, 1));
        for p in [
            vec![0x90u8, 0xe0, 0x80],
            vec![0x10, 0xaa],
            vec![],
            vec![0x90],
        ] {
            assert!(v.patch(2, &p).is_none(), "{p:?}");
        }
    }
}
