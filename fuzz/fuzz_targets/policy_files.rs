//! Policy file texts (registry TOML or JSON, public policy, revocation list, schema SDL) through
//! the compiler: any text must compile or give errors with file and line, never panic.
#![no_main]

use contentgate::policy::compile::{compile, Inputs};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let f = common::fixture();
    let Ok(text) = std::str::from_utf8(data) else { return };
    let base = Inputs::read(&f.config.path).expect("fixture inputs");
    let variants = [
        Inputs { tokens: Some((base.dir.join("tokens.toml"), text.to_string())), ..clone(&base) },
        Inputs { tokens: Some((base.dir.join("tokens.json"), text.to_string())), ..clone(&base) },
        Inputs { public: Some(text.to_string()), ..clone(&base) },
        Inputs { revoked: Some(text.to_string()), ..clone(&base) },
        Inputs { schema: Some(text.to_string()), ..clone(&base) },
    ];
    for inputs in &variants {
        let _ = compile(inputs, 2, Some(&f.snapshot), None);
    }
});

fn clone(i: &Inputs) -> Inputs {
    Inputs {
        config_path: i.config_path.clone(),
        config_text: i.config_text.clone(),
        dir: i.dir.clone(),
        public: i.public.clone(),
        tokens: i.tokens.clone(),
        revoked: i.revoked.clone(),
        schema: i.schema.clone(),
        needs_schema: i.needs_schema,
        keys_digest: i.keys_digest,
        revoked_mtime: i.revoked_mtime,
    }
}
