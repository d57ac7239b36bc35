//! The subscriber connection: the server offers, one offer in flight at a time.
//!
//! Subscriptions change at any moment (tracks published, unpublished, (un)subscribed); the
//! changes accumulate in `Participant::subs` and go out as one offer when none is in flight.
//! When the answer comes, the m-lines it accepted start forwarding and the next batch goes out.

use std::collections::HashMap;

use str0m::media::{Direction, MediaKind};

use crate::forward::Forwarder;
use crate::ids::{ParticipantId, TrackId};
use crate::sdp::restrict_payload_types;
use crate::sfu::{Down, FreeMid, Sfu};
use crate::signal::{OfferTrack, ServerMessage, TrackInfo, TrackKind};

/// The most of a subscriber leg's bytes over a second that may be resends; above it str0m drops
/// the resends queued. str0m's default, 15 %, is less than a link losing 10 % at random needs
/// (its repairs are lost too, and a keyframe's burst of them counts against one second): whole
/// queues of repairs were dropped, and in a virtual-time run with 10 % loss each way 18-23
/// frames per subscriber never arrived, against 1-6 at 40 % (`tests/nack_recovery.rs`). A full
/// link is kept from filling itself with resends by the allocator moving the leg down
/// (congestion.rs), not by this cap.
pub(crate) const RTX_SHARE_CAP: f32 = 0.4;

/// How long a subscriber leg keeps what it sent, for resends: as libwebrtc's sender does at
/// least (its history is max(1 s, 3 × RTT)). str0m's default of 3 s made the cache most of a
/// receiver's memory: its slots hold a packet's header inline (the payload is shared), and the
/// slot array doubles to fit the window, so a 100-packet/s leg held 512 slots. heaptrack, 100
/// WHEP receivers: 27.2 MB of 36 MB at peak was this cache (272 KiB a receiver).
pub(crate) const RTX_HISTORY: std::time::Duration = std::time::Duration::from_secs(1);

/// The most packets kept in that second (a 4 Mbit/s layer sends ~400 a second).
pub(crate) const RTX_HISTORY_PACKETS: usize = 512;

impl Sfu {
    /// Sends a subscriber offer for whatever changed, unless one is in flight or the client is
    /// away (the changes wait; `resume` calls this again).
    pub(crate) fn negotiate(&mut self, pid: ParticipantId) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        // Only a member with its socket up negotiates, one offer at a time.
        let Some(sig) = p.signalling.as_ref() else {
            return;
        };
        if sig.sub_pending.is_some() || sig.conn.is_none() {
            return;
        }
        // Subscriptions dropped before they had an m-line need no negotiation.
        p.subs.retain(|_, s| s.want || s.mid.is_some());
        let Some(peer) = self.peers.get_mut(&p.subscriber) else {
            return;
        };
        // First decide, then talk to str0m: its SdpApi holds the Rtc borrowed.
        //
        // A track that goes away leaves its m-line *inactive* rather than stopped: a stopped
        // m-line leaves the BUNDLE group, and when it was the group's first one Chrome tears
        // down the transport (DTLS close) and the whole subscriber connection with it. Inactive
        // m-lines are reused for the next track of the same kind and codec.
        let mut adds = Vec::new();
        let mut stops = Vec::new();
        for (tid, sub) in p.subs.iter_mut() {
            let track = self.tracks.get(tid);
            let gone = track.is_none() || !sub.want;
            if gone {
                if sub.negotiated
                    && !sub.stopping
                    && let Some(mid) = sub.mid
                {
                    stops.push(mid);
                    sub.stopping = true;
                }
                continue;
            }
            let Some(track) = track else { continue };
            if sub.mid.is_some() {
                continue;
            }
            let Some(codec) = track.codec else {
                continue; // announced only once its codec is known
            };
            // Offer only the publisher's codec (and its RTX, and RED for Opus) on this m-line.
            let pts: Vec<u8> = peer
                .rtc
                .codec_config()
                .match_params(codec)
                .map(|local| {
                    std::iter::once(*local.pt())
                        .chain(local.resend().map(|r| *r))
                        .chain(local.red().map(|r| *r))
                        .collect()
                })
                .unwrap_or_default();
            let spec = Some(codec.spec());
            sub.media = Some((track.kind, spec));
            let reuse = p
                .free_mids
                .iter()
                .position(|f| f.kind == track.kind && f.codec == spec)
                .map(|i| p.free_mids.remove(i));
            if let Some(free) = &reuse {
                sub.last_out = free.last_out;
            }
            adds.push((*tid, track.kind, track.owner, pts, reuse.map(|f| f.mid)));
        }
        let mut api = peer.rtc.sdp_api();
        for mid in stops {
            api.set_direction(mid, Direction::Inactive);
        }
        let mut keep: HashMap<String, Vec<u8>> = HashMap::new();
        for (tid, kind, owner, pts, reuse) in adds {
            let mid = match reuse {
                Some(mid) => {
                    api.set_direction(mid, Direction::SendOnly);
                    mid
                }
                None => {
                    let kind = match kind {
                        TrackKind::Audio => MediaKind::Audio,
                        TrackKind::Video => MediaKind::Video,
                    };
                    api.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(owner.to_string()),
                        Some(tid.to_string()),
                        None,
                    )
                }
            };
            if let Some(sub) = p.subs.get_mut(&tid) {
                sub.mid = Some(mid);
                sub.negotiated = false;
            }
            p.sub_mids.insert(mid, tid);
            if !pts.is_empty() {
                keep.insert(mid.to_string(), pts);
            }
        }
        if p.signalling
            .as_mut()
            .is_some_and(|s| std::mem::take(&mut s.sub_restart_ice))
        {
            api.ice_restart(true);
        }
        if !api.has_changes() {
            return;
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        let sdp = restrict_payload_types(&offer.to_sdp_string(), &keep);
        let tracks = p
            .subs
            .iter()
            .filter(|(_, s)| s.want && !s.stopping)
            .filter_map(|(tid, s)| {
                let owner = self.tracks.get(tid)?.owner;
                Some(OfferTrack {
                    mid: s.mid?.to_string(),
                    track_id: *tid,
                    participant_id: owner,
                })
            })
            .collect();
        let msg = ServerMessage::Offer { sdp, tracks };
        if let Some(s) = p.signalling.as_mut() {
            s.sub_pending = Some((pending, msg.clone()));
            s.sub_offered_at = Some(self.now);
        }
        let peer_id = p.subscriber;
        self.send(pid, msg);
        self.drain(peer_id);
    }

    /// The client accepted the in-flight offer: new m-lines start forwarding, stopped ones go.
    pub(crate) fn answer_accepted(&mut self, pid: ParticipantId) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let peer_id = p.subscriber;
        let mut started = Vec::new();
        let mut stopped = Vec::new();
        for (tid, sub) in p.subs.iter_mut() {
            let Some(mid) = sub.mid else { continue };
            if sub.stopping {
                stopped.push((*tid, mid));
            } else if !sub.negotiated {
                sub.negotiated = true;
                if sub.want {
                    started.push((*tid, mid, sub.max_height, sub.last_out));
                }
            }
        }
        for (tid, mid) in stopped {
            p.sub_mids.remove(&mid);
            if let Some(sub) = p.subs.remove(&tid)
                && let Some((kind, codec)) = sub.media
            {
                p.free_mids.push(FreeMid {
                    mid,
                    kind,
                    codec,
                    last_out: sub.last_out,
                });
            }
        }
        for (tid, mid, max_height, last_out) in started {
            let Some(track) = self.tracks.get_mut(&tid) else {
                continue;
            };
            let (needs_keyframe, clock) = match track.kind {
                TrackKind::Audio => (false, 48_000),
                TrackKind::Video => (true, 90_000),
            };
            let clock = track.codec.map_or(clock, |c| c.spec().clock_rate.get());
            let target = track.choose_layer(self.now, max_height, self.config.layer_inactive_after);
            if let Some(peer) = self.peers.get_mut(&peer_id) {
                let mut direct = peer.rtc.direct_api();
                if let Some(tx) = direct.stream_tx_by_mid(mid, None) {
                    // Resends are capped at a share of what the leg sends: on a link that is
                    // full, uncapped resends of what the queue dropped filled it again; a
                    // capped subscriber's link carried 220 kbit/s of resends and 30 kbit/s of
                    // new video, and its estimate sank to nothing. See RTX_SHARE_CAP.
                    tx.set_rtx_cache(RTX_HISTORY_PACKETS, RTX_HISTORY, Some(RTX_SHARE_CAP));
                    // Forwarded media leaves at once, not at str0m's pacing rate (the estimate
                    // times 1.1): the allocator keeps what is sent under the estimate by the
                    // layers it picks, and a pacer in an SFU only turns an estimate that
                    // undershoots into a queue of stale video. When a 300 kbit/s cap hit a
                    // 720p leg, the pacer's backlog (it keeps up to 2 s) went on flooding the
                    // link for 5 s after the leg was moved to 180p.
                    tx.set_unpaced(true);
                }
            }
            track.downstream.push(Down {
                subscriber: pid,
                peer: peer_id,
                mid,
                max_height,
                alloc: None,
                no_fit_since: None,
                up_since: None,
                fwd: Forwarder::new(needs_keyframe, clock, target).continuing(last_out),
                pts: Vec::new(),
                red: false,
                red_retag: None,
                vp8: Default::default(),
            });
            if needs_keyframe {
                // A new subscriber needs a keyframe to show anything: ask at once.
                self.request_keyframe(tid, target);
            }
        }
    }

    /// The track as others see it, once announced.
    pub(crate) fn track_info(&self, tid: TrackId) -> Option<TrackInfo> {
        let t = self.tracks.get(&tid)?;
        let codec = t.codec?;
        Some(TrackInfo {
            id: t.id,
            participant_id: t.owner,
            kind: t.kind,
            source: t.source,
            muted: t.muted,
            codec: Some(codec.spec().codec.to_string()),
            simulcast: t.rids.iter().map(|r| r.to_string()).collect(),
            width: t.width,
            height: t.height,
        })
    }
}
