//! The Authorization header through JWT decoding, verification and the registry lookup: any
//! bytes must give a principal or a typed refusal, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)] // each target uses one of the bodies
mod common;

fuzz_target!(|data: &[u8]| common::auth_header(data));
