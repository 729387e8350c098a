//! Session and sign-in cookies come back from browsers: opening any value never panics, and
//! nothing this key did not seal opens.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::base::seal::Sealer;

fuzz_target!(|data: &[u8]| {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    let sealer = SEALER.get_or_init(|| Sealer::new(&[7u8; 32]).unwrap());
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(sealer.open("session", text).is_none());
    }
});
