//! A POST body (and, split at the first NUL, a GET query string) through request parsing,
//! document parsing, the schema walk and authorization.
#![no_main]

use contentgate::config::EndpointKind;
use contentgate::pipeline::{decide, Incoming};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let f = common::fixture();
    let (body, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    for endpoint in [EndpointKind::Content, EndpointKind::Cdn, EndpointKind::Management] {
        let post = Incoming {
            method: &http::Method::POST,
            endpoint,
            authorization: Vec::new(),
            content_type: Some(b"application/json"),
            stage_header: Vec::new(),
            locales_header: if rest.is_empty() { Vec::new() } else { vec![rest] },
            query_string: None,
            body: Some(body),
        };
        let _ = decide(&post, &f.snapshot, &f.config.limits);
    }
    if let Ok(qs) = std::str::from_utf8(rest) {
        let get = Incoming {
            method: &http::Method::GET,
            endpoint: EndpointKind::Cdn,
            authorization: Vec::new(),
            content_type: None,
            stage_header: Vec::new(),
            locales_header: Vec::new(),
            query_string: Some(qs),
            body: None,
        };
        let _ = decide(&get, &f.snapshot, &f.config.limits);
    }
});
