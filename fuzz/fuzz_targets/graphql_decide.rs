//! A POST body (and, split at the first NUL, a GET query string) through request parsing,
//! document parsing, the schema walk and authorization.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)] // each target uses one of the bodies
mod common;

fuzz_target!(|data: &[u8]| common::graphql_decide(data));
