//! The error responses onair writes itself (the rest come from turn-server-proto).

use turn_server_proto::types::stun::attribute::{ErrorCode, Realm};
use turn_server_proto::types::stun::message::{
    IntegrityAlgorithm, Message, MessageIntegrityCredentials, MessageWrite, MessageWriteExt,
    MessageWriteVec,
};

/// The STUN magic cookie (RFC 8489 §5).
const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// An error response to `msg`, signed when the request authenticated.
pub fn error(
    msg: &Message<'_>,
    code: u16,
    realm: Option<&str>,
    sign: Option<(&MessageIntegrityCredentials, IntegrityAlgorithm)>,
) -> Vec<u8> {
    let mut b = Message::builder_error(msg, MessageWriteVec::new());
    if let Ok(e) = ErrorCode::builder(code).build() {
        let _ = b.add_attribute(&e);
    }
    if let Some(r) = realm.and_then(|r| Realm::new(r).ok()) {
        let _ = b.add_attribute(&r);
    }
    if let Some((creds, algo)) = sign {
        let _ = b.add_message_integrity(creds, algo);
    }
    let _ = b.add_fingerprint();
    b.finish()
}

/// A 400 Bad Request for a datagram whose 20-byte STUN header is sound but whose body is not
/// (a lying length, a truncated attribute). Anything that is not a STUN request gets None:
/// answering arbitrary bytes would make the server a reflector.
pub fn bad_request(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != COOKIE {
        return None;
    }
    let typ = u16::from_be_bytes([data[0], data[1]]);
    // Class bits are 0x0110; a request has both clear.
    if typ & 0x0110 != 0 {
        return None;
    }
    let reason = b"Bad Request";
    let value_len = 4 + reason.len();
    let padded = value_len.div_ceil(4) * 4;
    let mut out = Vec::with_capacity(20 + 4 + padded);
    out.extend_from_slice(&(typ | 0x0110).to_be_bytes());
    out.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
    out.extend_from_slice(&data[4..20]);
    out.extend_from_slice(&0x0009u16.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 4, 0]);
    out.extend_from_slice(reason);
    out.resize(20 + 4 + padded, 0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_a_lying_length_gets_400() {
        // Binding request, length says 200 bytes, 4 follow.
        let mut req = vec![0x00, 0x01, 0x00, 200];
        req.extend_from_slice(&COOKIE);
        req.extend_from_slice(&[7; 12]);
        req.extend_from_slice(&[0, 0x06, 0, 8]);
        assert!(Message::from_bytes(&req).is_err());
        let reply = bad_request(&req).expect("a STUN request");
        let msg = Message::from_bytes(&reply).expect("our reply parses");
        assert!(msg.has_class(turn_server_proto::types::stun::message::MessageClass::Error));
        assert_eq!(
            msg.transaction_id(),
            Message::from_bytes(&reply)
                .map(|m| m.transaction_id())
                .expect("parses")
        );
        assert_eq!(&reply[8..20], &[7; 12]);
        let code = msg.attribute::<ErrorCode>().expect("error code");
        assert_eq!(code.code(), 400);
    }

    #[test]
    fn non_stun_and_responses_get_nothing() {
        assert!(bad_request(b"GET / HTTP/1.1\r\n\r\n....").is_none());
        let mut resp = vec![0x01, 0x01, 0x00, 0x00];
        resp.extend_from_slice(&COOKIE);
        resp.extend_from_slice(&[1; 12]);
        assert!(bad_request(&resp).is_none());
    }
}
