//! Active speaker detection from the audio level each publisher puts on its packets (RFC 6464,
//! `ssrc-audio-level`: 0 dBov is the loudest, 127 silence; Chromium sends it on every Opus
//! packet). Sans-IO: packets' levels go in, and every [`INTERVAL`] the speakers of the moment
//! come out, loudest first.
//!
//! A track speaks in a window when enough of its packets are loud ([`LOUD_DBOV`], at least
//! [`SPEAKING_SHARE`] of them); a speaker's level is its loud packets' mean amplitude,
//! smoothed over windows so one cough does not take the floor and a pause for breath does not
//! drop it. This is the shape of LiveKit's and Jitsi's detectors, without their tuning tables.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ids::{ParticipantId, TrackId};

/// How often the speakers are worked out (and a change announced).
pub const INTERVAL: Duration = Duration::from_millis(300);

/// A packet at this level or louder counts as voice (-50 dBov: quiet speech at a normal
/// microphone gain is around -40; room noise after noise suppression below -60).
pub const LOUD_DBOV: u8 = 50;

/// The share of a window's packets that must be loud for the track to speak in it.
pub const SPEAKING_SHARE: f64 = 0.3;

/// Weight of the newest speaking window in the smoothed level (the rest is the previous
/// value), which orders the speakers.
const SMOOTHING: f64 = 0.4;

/// Windows without speech before a speaker is no longer one (0.9 s): a pause for breath keeps
/// the floor.
const HANGOVER: u32 = 3;

#[derive(Debug)]
struct TrackLevel {
    owner: ParticipantId,
    packets: u32,
    loud: u32,
    /// Sum of the loud packets' amplitudes.
    loud_sum: f64,
    smoothed: f64,
    /// Windows since it last spoke (`HANGOVER` or more: silent).
    quiet: u32,
}

/// Audio levels per track, turned into speakers.
#[derive(Debug, Default)]
pub struct Speakers {
    tracks: HashMap<TrackId, TrackLevel>,
    next: Option<Instant>,
}

impl Speakers {
    /// One audio packet's level (`dbov`: 0 loudest, 127 silence) on `track` of `owner`.
    pub fn observe(&mut self, track: TrackId, owner: ParticipantId, dbov: u8) {
        let t = self.tracks.entry(track).or_insert(TrackLevel {
            owner,
            packets: 0,
            loud: 0,
            loud_sum: 0.0,
            smoothed: 0.0,
            quiet: HANGOVER,
        });
        t.packets += 1;
        if dbov <= LOUD_DBOV {
            t.loud += 1;
            t.loud_sum += amplitude(dbov);
        }
    }

    /// The track is gone (unpublished, or its owner left).
    pub fn forget(&mut self, track: TrackId) {
        self.tracks.remove(&track);
    }

    /// Whether [`Speakers::tick`] is due.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|n| now >= n)
    }

    /// Closes the window: every participant speaking now with its level (0 to 1), loudest
    /// first. A participant with several audio tracks counts by its loudest.
    pub fn tick(&mut self, now: Instant) -> Vec<(ParticipantId, f64)> {
        self.next = Some(now + INTERVAL);
        let mut by_owner: HashMap<ParticipantId, f64> = HashMap::new();
        for t in self.tracks.values_mut() {
            let speaking =
                t.packets > 0 && f64::from(t.loud) >= SPEAKING_SHARE * f64::from(t.packets);
            if speaking {
                let level = t.loud_sum / f64::from(t.loud.max(1));
                t.smoothed = if t.quiet >= HANGOVER {
                    level
                } else {
                    SMOOTHING * level + (1.0 - SMOOTHING) * t.smoothed
                };
                t.quiet = 0;
            } else {
                t.quiet = t.quiet.saturating_add(1);
            }
            (t.packets, t.loud, t.loud_sum) = (0, 0, 0.0);
            if t.quiet < HANGOVER {
                let e = by_owner.entry(t.owner).or_insert(0.0);
                *e = e.max(t.smoothed);
            }
        }
        let mut out: Vec<_> = by_owner.into_iter().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// Linear amplitude (0 to 1) of a level in dBov.
fn amplitude(dbov: u8) -> f64 {
    10f64.powf(-f64::from(dbov.min(127)) / 20.0)
}

impl crate::sfu::Sfu {
    /// Works out who speaks in each room and tells the room when that changed (the set of
    /// speakers, or the loudest of them).
    pub(crate) fn announce_speakers(&mut self, now: Instant) {
        let speaking = self.speakers.tick(now);
        let mut loudest = std::collections::HashSet::new();
        let mut changed = Vec::new();
        for (name, room) in &mut self.rooms {
            let here: Vec<crate::signal::SpeakerLevel> = speaking
                .iter()
                .filter(|(p, _)| room.participants.contains(p))
                .map(|(p, level)| crate::signal::SpeakerLevel {
                    participant_id: *p,
                    level: *level as f32,
                })
                .collect();
            if let Some(first) = here.first() {
                loudest.insert(first.participant_id);
            }
            let ids = |v: &[crate::signal::SpeakerLevel]| {
                let mut ids: Vec<ParticipantId> = v.iter().map(|s| s.participant_id).collect();
                ids.sort_unstable();
                ids
            };
            let first = |v: &[crate::signal::SpeakerLevel]| v.first().map(|s| s.participant_id);
            let same = ids(&room.speakers) == ids(&here) && first(&room.speakers) == first(&here);
            // The levels are kept fresh for newcomers even when nothing is announced.
            room.speakers = here.clone();
            if !same {
                changed.push((name.clone(), here));
            }
        }
        self.loudest = loudest;
        for (room, speakers) in changed {
            let msg = crate::signal::ServerMessage::ActiveSpeakers { speakers };
            let conns: Vec<_> = self
                .rooms
                .get(&room)
                .map(|r| {
                    r.participants
                        .iter()
                        .filter_map(|p| self.participants.get(p).and_then(|p| p.conn()))
                        .collect()
                })
                .unwrap_or_default();
            for conn in conns {
                self.out
                    .push_back(crate::sfu::Output::Signal(conn, msg.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(s: &mut Speakers, track: u64, owner: u64, levels: &[u8]) {
        for l in levels {
            s.observe(TrackId(track), ParticipantId(owner), *l);
        }
    }

    #[test]
    fn the_louder_of_two_speakers_comes_first_and_silence_speaks_not() {
        let mut s = Speakers::default();
        let now = Instant::now();
        for i in 0..5 {
            window(&mut s, 1, 1, &[30; 15]);
            window(&mut s, 2, 2, &[45; 15]);
            window(&mut s, 3, 3, &[127; 15]);
            let out = s.tick(now + INTERVAL * i);
            let ids: Vec<u64> = out.iter().map(|(p, _)| p.0).collect();
            assert_eq!(ids, vec![1, 2], "window {i}");
            assert!(out[0].1 > out[1].1);
        }
    }

    #[test]
    fn a_cough_does_not_take_the_floor_and_a_breath_does_not_drop_it() {
        let mut s = Speakers::default();
        let now = Instant::now();
        // Mostly silent, one loud packet in fifteen: under the speaking share.
        let mut cough = [127u8; 15];
        cough[3] = 10;
        window(&mut s, 1, 1, &cough);
        assert!(s.tick(now).is_empty());
        // A speaker, then two silent windows (a breath): still speaking.
        for _ in 0..4 {
            window(&mut s, 2, 2, &[35; 15]);
            assert_eq!(s.tick(now).len(), 1);
        }
        for _ in 0..2 {
            window(&mut s, 2, 2, &[127; 15]);
            assert_eq!(s.tick(now).len(), 1, "a breath keeps the floor");
        }
        // A third silent window: gone.
        window(&mut s, 2, 2, &[127; 15]);
        assert!(s.tick(now).is_empty());
    }

    #[test]
    fn no_packets_is_no_speech_and_the_schedule_holds() {
        let mut s = Speakers::default();
        let now = Instant::now();
        assert!(s.due(now));
        assert!(s.tick(now).is_empty());
        assert!(!s.due(now + INTERVAL / 2));
        assert!(s.due(now + INTERVAL));
        // Absurd levels (above 127) count as silence, never panic.
        window(&mut s, 1, 1, &[200; 15]);
        assert!(s.tick(now + INTERVAL).is_empty());
        s.forget(TrackId(1));
        assert!(s.tick(now + INTERVAL * 2).is_empty());
    }
}
