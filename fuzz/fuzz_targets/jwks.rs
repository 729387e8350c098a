//! A JWKS document comes from the network: parsing never panics, whatever the body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = portcullis::identity::KeySet::from_jwks(data, 0);
});
