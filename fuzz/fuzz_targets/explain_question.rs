//! Any bytes posted to `POST /api/v1/explain` yield a question or an error naming a field;
//! never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = portcullis::access::explain::Question::from_json(data);
});
