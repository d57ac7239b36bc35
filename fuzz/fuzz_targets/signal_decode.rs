//! Any bytes on the signalling socket: decoding never panics, and a decoded message survives
//! a round trip through JSON unchanged (the server and test peers rely on both directions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::signal::{ClientMessage, decode};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = decode(data, 64 * 1024) else {
        return;
    };
    let json = serde_json::to_string(&msg).expect("a decoded message encodes");
    let again: ClientMessage = serde_json::from_str(&json).expect("and decodes again");
    assert_eq!(msg, again);
});
