//! The `gcms-signature` header and the webhook body through signature verification.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)] // each target uses one of the bodies
mod common;

fuzz_target!(|data: &[u8]| common::webhook_signature(data));
