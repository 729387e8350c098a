//! Host header normalisation never panics, and what it returns has no port and no upper case.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(h) = portcullis::access::routing::normalize_host(text) {
            assert!(!h.bytes().any(|b| b.is_ascii_uppercase()));
        }
    }
});
