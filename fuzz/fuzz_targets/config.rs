//! Any text given to the configuration parser yields a config or a list of errors; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = portcullis::config::Config::parse(text, std::path::Path::new("/nonexistent"));
    }
});
