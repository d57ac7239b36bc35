//! `GET /metrics`: Prometheus text exposition of the SFU's and TURN's counters.

use crate::webrtc::engine::MediaHandle;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Prometheus text exposition.
pub async fn metrics(State(media): State<MediaHandle>) -> Response {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let status = media.status().await;
    let t = &media.turn;
    // (name, type, help, value)
    let mut rows: Vec<(&str, &str, &str, u64)> = Vec::new();
    if let Some(s) = &status {
        rows.extend([
            ("onair_rooms", "gauge", "Rooms open.", s.rooms.len() as u64),
            (
                "onair_peers",
                "gauge",
                "WebRTC peer connections.",
                s.peers as u64,
            ),
            (
                "onair_rtp_in_total",
                "counter",
                "RTP packets received.",
                s.rtp_in,
            ),
            (
                "onair_rtp_out_total",
                "counter",
                "RTP packets sent.",
                s.rtp_out,
            ),
            (
                "onair_ice_failures_total",
                "counter",
                "Peer connections whose ICE never connected (logged with the candidates tried).",
                s.ice_failures,
            ),
            (
                "onair_ice_disconnects_total",
                "counter",
                "Peer connections that connected and later lost their path.",
                s.ice_disconnects,
            ),
            (
                "onair_audio_red_recovered_total",
                "counter",
                "Audio frames lost on the way in that recordings and HLS took from RED redundancy.",
                s.red_recovered,
            ),
        ]);
    }
    rows.extend([
        (
            "onair_turn_allocations",
            "gauge",
            "Live TURN allocations.",
            t.allocations.load(Relaxed),
        ),
        (
            "onair_turn_allocations_total",
            "counter",
            "TURN allocations made.",
            t.allocations_total.load(Relaxed),
        ),
        (
            "onair_turn_to_peer_packets_total",
            "counter",
            "Packets relayed client to peer.",
            t.to_peer_packets.load(Relaxed),
        ),
        (
            "onair_turn_to_client_packets_total",
            "counter",
            "Packets relayed peer to client.",
            t.to_client_packets.load(Relaxed),
        ),
        (
            "onair_turn_to_peer_bytes_total",
            "counter",
            "Bytes relayed client to peer.",
            t.to_peer_bytes.load(Relaxed),
        ),
        (
            "onair_turn_to_client_bytes_total",
            "counter",
            "Bytes relayed peer to client.",
            t.to_client_bytes.load(Relaxed),
        ),
        (
            "onair_turn_in_process_packets_total",
            "counter",
            "Relayed packets handed to the SFU without the kernel.",
            t.in_process_packets.load(Relaxed),
        ),
    ]);
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    if let Some(s) = &status {
        let _ = writeln!(
            out,
            "# HELP onair_participants_by_quality Participants (room members, WHIP and WHEP sessions) by connection quality.\n\
             # TYPE onair_participants_by_quality gauge"
        );
        for (q, n) in &s.by_quality {
            let q = serde_json::to_value(q).ok();
            let q = q.as_ref().and_then(|v| v.as_str()).unwrap_or("unknown");
            let _ = writeln!(out, "onair_participants_by_quality{{quality=\"{q}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP onair_media_shard_cpu_seconds_total CPU time of each media shard's thread.\n\
             # TYPE onair_media_shard_cpu_seconds_total counter"
        );
        for sh in &s.shards {
            if let Some(cpu) = sh.cpu_seconds {
                let _ = writeln!(
                    out,
                    "onair_media_shard_cpu_seconds_total{{shard=\"{}\"}} {cpu}",
                    sh.shard
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP onair_media_shard_peers WebRTC peer connections on each media shard.\n\
             # TYPE onair_media_shard_peers gauge"
        );
        for sh in &s.shards {
            let _ = writeln!(
                out,
                "onair_media_shard_peers{{shard=\"{}\"}} {}",
                sh.shard, sh.peers
            );
        }
        let h = &s.quality;
        histogram(
            &mut out,
            "onair_connection_rtt_ms",
            "Round trip of each connection, once a second, milliseconds.",
            &h.rtt_ms,
        );
        histogram(
            &mut out,
            "onair_connection_loss_percent",
            "Packet loss of each connection in the direction it carries media, once a second, percent.",
            &h.loss_pct,
        );
        histogram(
            &mut out,
            "onair_connection_jitter_ms",
            "Audio interarrival jitter of each connection, once a second, milliseconds.",
            &h.jitter_ms,
        );
    }
    let _ = writeln!(
        out,
        "# HELP onair_turn_refusals_total TURN requests and packets refused, by reason.\n\
         # TYPE onair_turn_refusals_total counter"
    );
    if let Ok(r) = t.refusals.lock() {
        for (reason, n) in r.iter() {
            let _ = writeln!(out, "onair_turn_refusals_total{{reason=\"{reason}\"}} {n}");
        }
    }
    let w = &media.hooks.counters;
    let _ = writeln!(
        out,
        "# HELP onair_webhooks_total Webhook deliveries by outcome (failed: attempts that failed; dropped: events given up on).\n\
         # TYPE onair_webhooks_total counter"
    );
    for (outcome, n) in [
        ("delivered", &w.delivered),
        ("failed", &w.failed_attempts),
        ("dropped", &w.dropped),
    ] {
        let n = n.load(Relaxed);
        let _ = writeln!(out, "onair_webhooks_total{{outcome=\"{outcome}\"}} {n}");
    }
    let l = &media.limits.refused;
    let _ = writeln!(
        out,
        "# HELP onair_limits_refused_total Requests and connections refused or closed by the abuse limits, by reason.\n\
         # TYPE onair_limits_refused_total counter"
    );
    for (reason, n) in [
        ("rate", &l.rate),
        ("connections_per_ip", &l.connections),
        ("idle", &l.idle),
    ] {
        let n = n.load(Relaxed);
        let _ = writeln!(out, "onair_limits_refused_total{{reason=\"{reason}\"}} {n}");
    }
    let d = &media.dropped;
    let _ = writeln!(
        out,
        "# HELP onair_media_dropped_total Datagrams and exported packet batches dropped at a media shard's full queue.\n\
         # TYPE onair_media_dropped_total counter"
    );
    for (queue, n) in [("relayed", &d.relayed), ("mirrored", &d.mirrored)] {
        let n = n.load(Relaxed);
        let _ = writeln!(out, "onair_media_dropped_total{{queue=\"{queue}\"}} {n}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// One histogram in Prometheus's text format.
fn histogram(out: &mut String, name: &str, help: &str, h: &sfu::quality::Histogram) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (b, c) in h.bounds.iter().zip(&h.counts) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
        h.count, h.sum, h.count
    );
}
