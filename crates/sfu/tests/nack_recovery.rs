//! Publisher → SFU → three subscribers, every link losing 5 % of datagrams in both directions
//! (seeded): lost packets are repaired by NACK/RTX on both legs, so nearly every video frame
//! arrives complete.
//!
//! Why not "every frame, always": the test receivers are str0m in frame mode, which gives up on
//! a packet after 5 NACKs (about 150 ms here). When the *uplink* repair itself is lost twice in
//! a row, the subscribers' NACKs reach the SFU before it has the packet, and they give up. That
//! happens for well under 1 % of frames; Chrome keeps asking for longer. Without NACK/RTX, 5 %
//! packet loss on each of two legs loses about one in five of these two-packet frames, so the
//! bar below cannot be met by luck.

use std::time::Duration;

use sfu::SfuConfig;
use testkit::{Link, Publish, Scenario};

#[test]
fn frames_are_recovered_under_five_percent_loss_both_ways() {
    let ratio = delivered_under(0.05, 0.985);
    assert!(ratio >= 0.995, "{ratio:.4} of the frames delivered");
}

/// At 10 % each way (about 19 % of packets lost end to end) repairs are more than a tenth of
/// what a subscriber leg sends; str0m's default cap on resends (15 % of a leg's bytes over a
/// second) dropped whole queues of them: 18-23 frames never arrived per seed, against 1-6
/// with the cap at 40 % (negotiate.rs).
#[test]
fn frames_are_recovered_under_ten_percent_loss_both_ways() {
    let ratio = delivered_under(0.10, 0.97);
    assert!(ratio >= 0.985, "{ratio:.4} of the frames delivered");
}

/// Runs three seeds with every link losing `loss` each way; each subscriber must get at least
/// `per_min` of the frames sent after its first keyframe. Returns the share delivered overall.
fn delivered_under(loss: f64, per_min: f64) -> f64 {
    let (mut expected, mut delivered) = (0usize, 0usize);
    for seed in [1, 2, 3] {
        let mut s = Scenario::new(SfuConfig::default(), seed);
        // Connections are set up on clean links (a lost DTLS flight costs a second of backoff,
        // which is not what this test is about), then every link turns lossy.
        let publisher = s.add_client("pub", Link::clean());
        s.clients[publisher].publish = Some(Publish {
            video: true,
            audio: true,
            simulcast: false,
        });
        s.join(publisher, "loss");
        let subs: Vec<usize> = (0..3)
            .map(|i| {
                let c = s.add_client(&format!("sub{i}"), Link::clean());
                s.join(c, "loss");
                c
            })
            .collect();

        s.run_for(Duration::from_secs(1));
        for c in &mut s.clients {
            c.link = Link::lossy(loss);
        }
        s.run_for(Duration::from_secs(7));
        s.clients[publisher].stop_media_at = Some(s.now);
        // Let retransmissions of the last frames finish.
        s.run_for(Duration::from_secs(2));
        assert!(
            s.dropped as f64 > 2400.0 * loss,
            "the links must lose packets ({})",
            s.dropped
        );

        let last_sent = 8 * 30 - 1;
        for &c in &subs {
            let client = &s.clients[c];
            let video: Vec<_> = client.frames.iter().filter(|f| f.video).collect();
            let first = video
                .iter()
                .position(|f| f.key)
                .expect("a keyframe arrived");
            let from = video[first].number;
            let head: Vec<_> = video
                .iter()
                .take(6)
                .map(|f| (f.number, f.key, f.contiguous))
                .collect();
            assert!(
                from < 35,
                "seed {seed} {}: first keyframe only at frame {from}: {head:?}",
                client.name
            );
            let got = video[first..].iter().map(|f| f.number).collect::<Vec<_>>();
            assert!(got.windows(2).all(|w| w[1] > w[0]), "frames in order");
            let want = (last_sent - from + 1) as usize;
            let per = got.len() as f64 / want as f64;
            let gaps: Vec<_> = got.windows(2).filter(|w| w[1] != w[0] + 1).collect();
            let head: Vec<_> = video
                .iter()
                .take(4)
                .map(|f| (f.number, f.key, f.contiguous))
                .collect();
            assert!(
                per >= per_min,
                "seed {seed} {}: {} of {want} frames; gaps {gaps:?}; first {head:?}",
                client.name,
                got.len()
            );
            expected += want;
            delivered += got.len();
            let audio = client.frames.iter().filter(|f| !f.video).count();
            assert!(audio > 250, "{}: audio frames {audio}", client.name);
        }
    }
    delivered as f64 / expected as f64
}
