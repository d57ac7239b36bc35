//! The stream allocator: shares one subscriber's estimated downlink among the video tracks it
//! receives, so that what is sent fits what the network carries. Audio is never throttled:
//! its rate is taken off the estimate first. Video tracks are served in priority order, each
//! at the lowest layer first (so that as many as possible keep moving), then raised one layer
//! at a time, highest priority first, as far as the rest of the estimate allows and no higher
//! than the layer the subscriber asked for (its `max_height`). A track whose lowest layer does
//! not fit is paused rather than sent at a rate that would drown the audio with it.
//!
//! Decisions have hysteresis so that a layer does not flap with every estimate: a track keeps
//! its current layer while that layer fits the estimate as it is, but moves up (or resumes from
//! a pause) only when the higher layer fits with [`UP_HEADROOM`] to spare.
//!
//! Pure and time-free: rates in, decisions out. The SFU calls it when a subscriber's estimate
//! changes.

/// Moving up needs the new layer's rate times this to fit.
pub const UP_HEADROOM: f64 = 1.15;

/// One layer of a video track as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerRate {
    /// Its measured bitrate, bits per second (0 when not measured yet: it counts as free).
    pub bps: f64,
    /// The publisher is sending it.
    pub active: bool,
}

/// One video track a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoDemand {
    /// Higher goes first (screen share above camera).
    pub priority: u8,
    /// Its layers, lowest first.
    pub layers: Vec<LayerRate>,
    /// The highest layer the subscriber wants (its `max_height` choice).
    pub wanted: usize,
    /// The layer the allocator gave it last time, if any (`None`: new, or paused).
    pub current: Option<usize>,
}

/// What a video track may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Up to this layer.
    Layer(usize),
    /// Nothing fits: send no video.
    Paused,
}

/// Shares `estimate_bps` (the subscriber's downlink) among `videos` after `audio_bps`, in the
/// order given; returns one [`Allocation`] per video track and the rate they add up to.
pub fn allocate(
    estimate_bps: f64,
    audio_bps: f64,
    videos: &[VideoDemand],
) -> (Vec<Allocation>, f64) {
    let mut budget = (estimate_bps - audio_bps).max(0.0);
    let mut order: Vec<usize> = (0..videos.len()).collect();
    // Stable: equal priorities keep the caller's order.
    order.sort_by_key(|&i| std::cmp::Reverse(videos[i].priority));
    let mut chosen: Vec<Option<usize>> = vec![None; videos.len()];
    // Every track its lowest usable layer, in priority order, while they fit.
    for &i in &order {
        let v = &videos[i];
        let Some(low) = usable(v).next() else {
            continue;
        };
        let rate = v.layers[low].bps;
        // A paused (or new) track comes back only with headroom, as a layer is reached.
        let headroom = if v.current.is_some() {
            1.0
        } else {
            UP_HEADROOM
        };
        if rate * headroom <= budget {
            budget -= rate;
            chosen[i] = Some(low);
        }
    }
    // Then up, one layer at a time, highest priority first, until nothing more fits.
    loop {
        let mut raised = false;
        for &i in &order {
            let v = &videos[i];
            let Some(at) = chosen[i] else { continue };
            let Some(next) = usable(v).find(|&l| l > at && l <= v.wanted) else {
                continue;
            };
            let extra = v.layers[next].bps - v.layers[at].bps;
            // Holding a layer needs it to fit; reaching one, some headroom.
            let headroom = if v.current.is_some_and(|c| c >= next) {
                1.0
            } else {
                UP_HEADROOM
            };
            if v.layers[next].bps * headroom - v.layers[at].bps <= budget {
                budget -= extra.max(0.0);
                chosen[i] = Some(next);
                raised = true;
            }
        }
        if !raised {
            break;
        }
    }
    let used = (estimate_bps - audio_bps).max(0.0) - budget;
    let out = chosen
        .into_iter()
        .map(|c| c.map_or(Allocation::Paused, Allocation::Layer))
        .collect();
    (out, used)
}

/// The layers of `v` that may be sent, lowest first: the active ones (all, when none is).
fn usable(v: &VideoDemand) -> impl Iterator<Item = usize> + '_ {
    let any_active = v.layers.iter().any(|l| l.active);
    (0..v.layers.len()).filter(move |&i| v.layers[i].active || !any_active)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulcast camera: 150 kbit/s, 500 kbit/s and 1.5 Mbit/s layers.
    fn camera(priority: u8, wanted: usize, current: Option<usize>) -> VideoDemand {
        VideoDemand {
            priority,
            layers: [150e3, 500e3, 1500e3]
                .map(|bps| LayerRate { bps, active: true })
                .to_vec(),
            wanted,
            current,
        }
    }

    #[test]
    fn a_clean_link_gets_what_was_asked_for_and_no_more() {
        let (a, used) = allocate(10e6, 64e3, &[camera(1, 2, None), camera(1, 1, None)]);
        assert_eq!(a, [Allocation::Layer(2), Allocation::Layer(1)]);
        assert_eq!(used, 2000e3);
    }

    #[test]
    fn audio_comes_off_the_estimate_first_and_video_fits_what_is_left() {
        // 700 kbit/s, 64 of them audio: the middle layer (500) fits with headroom, the top not.
        let (a, _) = allocate(700e3, 64e3, &[camera(1, 2, None)]);
        assert_eq!(a, [Allocation::Layer(1)]);
        // 300 kbit/s: the lowest layer.
        assert_eq!(
            allocate(300e3, 64e3, &[camera(1, 2, None)]).0,
            [Allocation::Layer(0)]
        );
        // Less than audio and the lowest layer: video pauses, audio is untouched.
        assert_eq!(
            allocate(180e3, 64e3, &[camera(1, 2, None)]).0,
            [Allocation::Paused]
        );
    }

    #[test]
    fn priority_decides_who_keeps_moving_and_who_goes_up_first() {
        // Room for both lowest layers and one step up: the screen share (priority 2) gets it.
        let screen = camera(2, 2, None);
        let (a, _) = allocate(
            64e3 + 150e3 + 580e3,
            64e3,
            &[camera(1, 2, None), screen.clone()],
        );
        assert_eq!(a, [Allocation::Layer(0), Allocation::Layer(1)]);
        // Room for one lowest layer only: the higher priority keeps moving.
        let (a, _) = allocate(64e3 + 200e3, 64e3, &[camera(1, 2, None), screen]);
        assert_eq!(a, [Allocation::Paused, Allocation::Layer(0)]);
    }

    #[test]
    fn a_layer_is_held_while_it_fits_but_reached_only_with_headroom() {
        // 1.55 Mbit/s left after audio: 1.5 fits, but not with 15 % to spare.
        let est = 64e3 + 1550e3;
        assert_eq!(
            allocate(est, 64e3, &[camera(1, 2, None)]).0,
            [Allocation::Layer(1)]
        );
        assert_eq!(
            allocate(est, 64e3, &[camera(1, 2, Some(1))]).0,
            [Allocation::Layer(1)]
        );
        // Already at the top: it stays there.
        assert_eq!(
            allocate(est, 64e3, &[camera(1, 2, Some(2))]).0,
            [Allocation::Layer(2)]
        );
        // Below what the top needs: down, whatever it had.
        assert_eq!(
            allocate(64e3 + 1400e3, 64e3, &[camera(1, 2, Some(2))]).0,
            [Allocation::Layer(1)]
        );
    }

    #[test]
    fn inactive_layers_are_skipped_and_unmeasured_ones_cost_nothing() {
        let mut v = camera(1, 2, None);
        v.layers[1].active = false;
        // The middle layer is not sent by the publisher: from the lowest straight to the top.
        assert_eq!(allocate(10e6, 0.0, &[v.clone()]).0, [Allocation::Layer(2)]);
        assert_eq!(allocate(700e3, 0.0, &[v]).0, [Allocation::Layer(0)]);
        // No rates yet (the first second of a track): the wanted layer.
        let fresh = VideoDemand {
            layers: vec![
                LayerRate {
                    bps: 0.0,
                    active: true
                };
                3
            ],
            ..camera(1, 1, None)
        };
        assert_eq!(allocate(100e3, 64e3, &[fresh]).0, [Allocation::Layer(1)]);
        // A track with no layers at all (nothing seen) is not allocated.
        let none = VideoDemand {
            layers: Vec::new(),
            ..camera(1, 0, None)
        };
        assert_eq!(allocate(1e6, 0.0, &[none]).0, [Allocation::Paused]);
    }

    #[test]
    fn absurd_estimates_give_sane_answers() {
        assert_eq!(
            allocate(f64::MAX, 0.0, &[camera(1, 2, None)]).0,
            [Allocation::Layer(2)]
        );
        assert_eq!(
            allocate(0.0, 64e3, &[camera(1, 2, None)]).0,
            [Allocation::Paused]
        );
        assert_eq!(
            allocate(-5.0, 64e3, &[camera(1, 2, None)]).0,
            [Allocation::Paused]
        );
        assert_eq!(allocate(1e6, 0.0, &[]).0, []);
    }
}
