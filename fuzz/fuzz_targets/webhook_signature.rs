//! The `gcms-signature` header and the webhook body through signature verification.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = std::str::from_utf8(header) else { return };
    let _ = contentgate::admin::verify_signature(header, body, b"fuzz-secret", Duration::from_secs(300), SystemTime::now());
});
