//! Thin binary: parse the command line, load, build the Pingora server, run.

use std::process::ExitCode;

use clap::Parser;
use contentgate::cli::{Cli, Command, PolicyCommand, TokenCommand};
use contentgate::config::Config;
use contentgate::server::{self, Runtime};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    contentgate::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, upgrade } => {
            let cfg = match Config::load(&config.path) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            contentgate::telemetry::init(&cfg.log);
            let rt = match Runtime::load(cfg) {
                Ok(rt) => rt,
                Err(e) => return fail(&e.to_string()),
            };
            tracing::info!(summary = %rt.store.snapshot().summary(), "contentgate starting");
            match server::build(&rt, upgrade) {
                Ok(s) => s.run_forever(),
                Err(e) => fail(&e),
            }
        }
        Command::Check { config } => match contentgate::check::run(&config.path) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Token(TokenCommand::Mint {
            alg,
            key,
            secret_env,
            secret_file,
            kid,
            jti,
            iss,
            aud,
            sub,
            expires_in,
            name,
            default_stage,
        }) => {
            let key_bytes = match (key, secret_env, secret_file) {
                (Some(p), None, None) => {
                    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
                }
                (None, Some(v), None) => std::env::var(&v)
                    .map(String::into_bytes)
                    .map_err(|_| format!("environment variable {v} is not set")),
                (None, None, Some(p)) => std::fs::read(&p)
                    .map(|b| String::from_utf8_lossy(&b).trim_end().as_bytes().to_vec())
                    .map_err(|e| format!("cannot read {}: {e}", p.display())),
                _ => Err("give exactly one of --key, --secret-env, --secret-file".to_string()),
            };
            let key_bytes = match key_bytes {
                Ok(k) => k,
                Err(e) => return fail(&e),
            };
            let req = contentgate::token::MintRequest {
                algorithm: &alg,
                key: &key_bytes,
                kid: kid.as_deref(),
                jti: jti.as_deref(),
                issuer: iss.as_deref(),
                audiences: &aud,
                subject: sub.as_deref(),
                expires_in,
            };
            match contentgate::token::mint(&req) {
                Ok((jwt, jti)) => {
                    println!("{jwt}");
                    eprintln!(
                        "\n# registry entry to add to policies/tokens.toml:\n{}",
                        contentgate::token::registry_entry(&jti, &name, &default_stage)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Token(TokenCommand::Inspect { jwt, config }) => {
            match contentgate::token::inspect(&jwt, config.as_deref()) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Endpoints { at } => verb(contentgate::adminctl::endpoints(&at, &writer())),
        Command::Stage(cmd) => verb(contentgate::adminctl::stage(&cmd, &writer())),
        Command::Permission(cmd) => verb(contentgate::adminctl::permission(&cmd, &writer())),
        Command::Token(
            cmd @ (TokenCommand::List { .. }
            | TokenCommand::Add { .. }
            | TokenCommand::Edit { .. }
            | TokenCommand::Delete { .. }
            | TokenCommand::Check { .. }
            | TokenCommand::Reissue { .. }
            | TokenCommand::Permissions { .. }),
        ) => verb(contentgate::adminctl::token(&cmd, &writer())),
        Command::Token(TokenCommand::Revoke { jtis, config }) => report(
            contentgate::policyctl::revoke(&config.path, &jtis, &writer()),
        ),
        Command::Policy(PolicyCommand::Push {
            dir,
            config,
            dry_run,
            allow_unrevoke,
        }) => report(contentgate::policyctl::push(
            &config.path,
            &dir,
            dry_run,
            allow_unrevoke,
            &writer(),
        )),
        Command::Policy(PolicyCommand::Status { config }) => {
            report(contentgate::policyctl::status(&config.path))
        }
        Command::Demo {
            port,
            admin_port,
            upstream_port,
        } => demo(port, admin_port, upstream_port),
        Command::SampleCms {
            port,
            root_stage_default,
            runtime_dir,
        } => sample_cms(port, root_stage_default.as_deref(), runtime_dir),
    }
}

#[cfg(feature = "demo")]
fn demo(port: u16, admin_port: u16, upstream_port: u16) -> ExitCode {
    match contentgate::demo::run(port, admin_port, upstream_port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

#[cfg(feature = "demo")]
fn sample_cms(
    port: u16,
    root_stage_default: Option<&str>,
    runtime_dir: Option<std::path::PathBuf>,
) -> ExitCode {
    match contentgate::demo::run_sample_cms(port, root_stage_default, runtime_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

#[cfg(not(feature = "demo"))]
fn demo(_: u16, _: u16, _: u16) -> ExitCode {
    fail("this build has no demo (built without the `demo` feature)")
}

#[cfg(not(feature = "demo"))]
fn sample_cms(_: u16, _: Option<&str>, _: Option<std::path::PathBuf>) -> ExitCode {
    fail("this build has no sample CMS (built without the `demo` feature)")
}

/// Who wrote a change, for the set's `writer` field and audit lines.
fn writer() -> String {
    let user: String = std::env::var("USER")
        .unwrap_or_else(|_| "unknown".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c))
        .take(64)
        .collect();
    format!("cli:{user}")
}

/// An API-access verb's outcome: its output, or its message and exit code (see adminctl).
fn verb(r: Result<String, contentgate::adminctl::Failure>) -> ExitCode {
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("contentgate: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn report(r: Result<String, String>) -> ExitCode {
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    // The log lines held so far explain the error: they go first.
    contentgate::telemetry::flush();
    eprintln!("contentgate: error:\n{message}");
    ExitCode::FAILURE
}
