//! Any bytes as an access token: verification never panics, and nothing but a token signed
//! with the key passes. Half the inputs are made to look like JWTs (three base64url parts, a
//! header naming HS256 and the key) so the fuzzer reaches the claims and the signature check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = "A".repeat(43);
    let entries = [("main".to_owned(), secret)];
    let Ok(keys) = auth::Keys::from_config(entries.iter().map(|(a, b)| (a, b))) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let now = 1_800_000_000;
    let _ = keys.verify(&text, now);
    if let Some((claims, sig)) = text.split_once('|') {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "{}.{}.{}",
            b64.encode(br#"{"alg":"HS256","typ":"JWT","kid":"main"}"#),
            b64.encode(claims.as_bytes()),
            b64.encode(sig.as_bytes())
        );
        // A signature the fuzzer made up never verifies.
        assert!(keys.verify(&token, now).is_err());
    }
});
