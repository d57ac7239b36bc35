//! Where an SFU stands among the server's media shards (one `Sfu` per thread): which rooms are
//! its own, which ids it may hand out, and the count of rooms open on all of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// This SFU's place: shard `index` of `count`. A room lives on one shard, the one
/// [`shard_of`] names; every shard hands out ids in its own residue class, so participant and
/// track ids stay unique across the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPlace {
    /// This shard's number, from 0.
    pub index: u32,
    /// How many shards the server runs.
    pub count: u32,
}

impl Default for ShardPlace {
    fn default() -> Self {
        ShardPlace { index: 0, count: 1 }
    }
}

impl ShardPlace {
    /// Whether `room` lives here.
    pub fn owns(&self, room: &str) -> bool {
        shard_of(room, self.count as usize) == self.index as usize
    }
}

/// The shard a room lives on, among `count`: FNV-1a of its name, so that every thread (and
/// every restart) agrees without asking anyone.
pub fn shard_of(room: &str, count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % count as u64) as usize
}

/// Rooms open on every shard together, so that `max_rooms` bounds the server, not each shard.
#[derive(Debug, Clone, Default)]
pub struct OpenRooms(Arc<AtomicUsize>);

impl OpenRooms {
    /// Rooms open now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts a room opened, unless `max` are open already.
    pub(crate) fn open(&self, max: usize) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn close(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_has_exactly_one_owner() {
        for count in 1..5u32 {
            for i in 0..200 {
                let room = format!("room-{i}");
                let owners = (0..count)
                    .filter(|&index| ShardPlace { index, count }.owns(&room))
                    .count();
                assert_eq!(owners, 1, "{room} among {count}");
            }
        }
    }

    #[test]
    fn rooms_spread_over_the_shards() {
        let mut per = [0usize; 4];
        for i in 0..400 {
            per[shard_of(&format!("r{i}"), 4)] += 1;
        }
        assert!(per.iter().all(|&n| n > 60), "{per:?}");
    }

    #[test]
    fn the_open_room_count_stops_at_its_maximum() {
        let rooms = OpenRooms::default();
        let other_shard = rooms.clone();
        assert!(rooms.open(2));
        assert!(other_shard.open(2));
        assert!(!rooms.open(2));
        other_shard.close();
        assert!(rooms.open(2));
        assert_eq!(rooms.get(), 2);
    }
}
