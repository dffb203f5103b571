//! Policy file texts (registry TOML or JSON, public policy, revocation list, schema SDL) through
//! the compiler: any text must compile or give errors with file and line, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)] // each target uses one of the bodies
mod common;

fuzz_target!(|data: &[u8]| common::policy_files(data));
