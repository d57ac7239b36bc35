//! The TC mapping's bytes: flow metadata (RFC 7425 §5.1.1), the message header (§5.1.2), the
//! user control events we send, and the AMF0 commands and statuses.

use rml_rtmp::rml_amf0::{self, Amf0Value};

/// RTMP message types.
pub(super) const USER_CONTROL: u8 = 4;
pub(super) const AUDIO: u8 = 8;
pub(super) const VIDEO: u8 = 9;
pub(super) const AMF0_DATA: u8 = 18;
pub(super) const AMF0_COMMAND: u8 = 20;
pub(super) const AMF3_COMMAND: u8 = 17;

/// User control events.
const STREAM_BEGIN: u16 = 0;
/// Flow synchronization (RFC 7425 §5.2).
const FLOW_SYNC: u16 = 34;

/// The metadata signature.
const SIGNATURE: [u8; 2] = *b"TC";
/// Option flag: the stream ID is present (the profile requires it).
const FLAG_STREAM_ID: u8 = 0x04;
/// Option flag: the sender would like network arrival order rather than queuing order.
const FLAG_ARRIVAL_ORDER: u8 = 0x01;

/// What a TC flow's metadata says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FlowMeta {
    pub stream_id: u32,
    /// The receive-intent hint: network arrival order. Over one WebSocket messages arrive in
    /// order anyway, so it changes nothing here.
    pub arrival_order: bool,
}

impl FlowMeta {
    /// `None` for a flow that is not TC: another signature, no stream ID (which the RFC says
    /// to refuse), or a stream ID past 32 bits. The reserved bits are ignored.
    pub fn parse(metadata: &[u8]) -> Option<FlowMeta> {
        let rest = metadata.strip_prefix(&SIGNATURE)?;
        let (&flags, mut rest) = rest.split_first()?;
        if flags & FLAG_STREAM_ID == 0 {
            return None;
        }
        let stream_id = u32::try_from(rtws::vlu::read(&mut rest).ok()?).ok()?;
        Some(FlowMeta {
            stream_id,
            arrival_order: flags & FLAG_ARRIVAL_ORDER != 0,
        })
    }
}

/// `TC <flags> <vlu stream ID>`: our flows ask for queuing order, as the reference server's do.
pub(super) fn metadata(stream_id: u32) -> Vec<u8> {
    let mut m = vec![SIGNATURE[0], SIGNATURE[1], FLAG_STREAM_ID];
    rtws::vlu::write(u64::from(stream_id), &mut m);
    m
}

/// `<type> <u32 timestamp ms> <payload>`.
pub(super) fn message(kind: u8, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(5 + payload.len());
    m.push(kind);
    m.extend_from_slice(&ts.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// Stream begin for `stream_id` (a user control message).
pub(super) fn stream_begin(stream_id: u32) -> Vec<u8> {
    let mut body = STREAM_BEGIN.to_be_bytes().to_vec();
    body.extend_from_slice(&stream_id.to_be_bytes());
    message(USER_CONTROL, 0, &body)
}

/// Flow synchronization: a receiver holds each flow that carries it until `count` flows have.
pub(super) fn flow_sync(sync_id: u32, count: u32) -> Vec<u8> {
    let mut body = FLOW_SYNC.to_be_bytes().to_vec();
    body.extend_from_slice(&sync_id.to_be_bytes());
    body.extend_from_slice(&count.to_be_bytes());
    message(USER_CONTROL, 0, &body)
}

/// An AMF0 command message: `name`, transaction, command object, arguments.
pub(super) fn command(
    name: &str,
    transaction: f64,
    object: Amf0Value,
    args: Vec<Amf0Value>,
) -> Vec<u8> {
    let mut values = vec![
        Amf0Value::Utf8String(name.into()),
        Amf0Value::Number(transaction),
        object,
    ];
    values.extend(args);
    // Serializing our own values cannot fail (no strings past 64 KiB).
    message(
        AMF0_COMMAND,
        0,
        &rml_amf0::serialize(&values).unwrap_or_default(),
    )
}

/// `onStatus` with an info object.
pub(super) fn on_status(level: &str, code: &str, description: &str) -> Vec<u8> {
    command(
        "onStatus",
        0.0,
        Amf0Value::Null,
        vec![status(level, code, description)],
    )
}

pub(super) fn object<const N: usize>(props: [(&str, Amf0Value); N]) -> Amf0Value {
    Amf0Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

pub(super) fn status(level: &str, code: &str, description: &str) -> Amf0Value {
    object([
        ("level", Amf0Value::Utf8String(level.into())),
        ("code", Amf0Value::Utf8String(code.into())),
        ("description", Amf0Value::Utf8String(description.into())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_refuses_what_is_not_tc() {
        assert_eq!(metadata(0), b"TC\x04\x00");
        assert_eq!(metadata(300), b"TC\x04\x82\x2c");
        assert_eq!(
            FlowMeta::parse(b"TC\x05\x82\x2c"),
            Some(FlowMeta {
                stream_id: 300,
                arrival_order: true
            })
        );
        // Reserved bits are ignored.
        assert_eq!(FlowMeta::parse(b"TC\xfe\x01").map(|m| m.stream_id), Some(1));
        for bad in [
            &b"TC\x00\x01"[..],
            b"TC\x04",
            b"TC\x04\x80",
            b"XX\x04\x00",
            b"TC",
            b"",
        ] {
            assert_eq!(FlowMeta::parse(bad), None, "{bad:?}");
        }
        // Past 32 bits.
        assert_eq!(FlowMeta::parse(b"TC\x04\x90\x80\x80\x80\x00"), None);
    }

    #[test]
    fn user_control_messages_are_laid_out_as_rtmp_has_them() {
        assert_eq!(stream_begin(5), [4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(
            flow_sync(7, 2),
            [4, 0, 0, 0, 0, 0, 34, 0, 0, 0, 7, 0, 0, 0, 2]
        );
    }
}
