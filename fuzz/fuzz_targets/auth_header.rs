//! The Authorization header through JWT decoding, verification and the registry lookup: any
//! bytes must give a principal or a typed refusal, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let f = common::fixture();
    let _ = contentgate::auth::authenticate(&[data], &f.snapshot);
    // Also as the token of a well-formed header.
    let mut header = b"Bearer ".to_vec();
    header.extend_from_slice(data);
    let _ = contentgate::auth::authenticate(&[&header], &f.snapshot);
});
