//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every crash reproducer
//! (`fuzz/regressions/<target>/`) through the fuzz targets' own bodies, on stable, in every
//! `cargo test`: what the fuzzers found once stays covered without nightly.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

#[path = "../fuzz/fuzz_targets/common.rs"]
#[allow(dead_code)]
mod fuzz_common;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seen = 0;
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            // A panic names the input that caused it.
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(result.is_ok(), "{target}: {} panics", path.display());
            seen += 1;
        }
    }
    assert!(seen > 0, "no corpus for {target}");
}

#[test]
fn auth_header_corpus() {
    replay("auth_header", fuzz_common::auth_header);
}

#[test]
fn graphql_decide_corpus() {
    replay("graphql_decide", fuzz_common::graphql_decide);
}

#[test]
fn policy_files_corpus() {
    replay("policy_files", fuzz_common::policy_files);
}

#[test]
fn webhook_signature_corpus() {
    replay("webhook_signature", fuzz_common::webhook_signature);
}
