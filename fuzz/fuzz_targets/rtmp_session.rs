//! Any bytes from an RTMP client: the session never panics and never holds more than its
//! buffer limit. In half the cases the bytes follow a valid handshake, so the fuzzer reaches
//! the chunk stream, the commands and the FLV tags instead of failing on the first byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtmp::{Output, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let config = SessionConfig {
        max_buffered_bytes: 256 * 1024,
        ..SessionConfig::default()
    };
    let mut session = Session::new(config);
    if mode & 1 == 1 {
        // C0 (version 3), C1 and C2 of zeros: the server falls back to the simple handshake
        // and does not check C2, so this is accepted.
        let mut handshake = vec![0u8; 1 + 1536 + 1536];
        handshake[0] = 3;
        session.handle_input(&handshake).expect("a valid handshake");
    }
    // Split the input at varying points: the parse must not depend on read boundaries.
    let step = 1 + usize::from(mode >> 1);
    for piece in data.chunks(step) {
        let result = session.handle_input(piece);
        while let Some(output) = session.poll_output() {
            if let Output::Event(rtmp::Event::PublishRequested { request, .. }) = output {
                // Accept, so media messages reach the FLV parser.
                let _ = session.accept_publish(request);
            }
        }
        if result.is_err() {
            return;
        }
    }
});
