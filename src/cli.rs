//! The command line: `serve`, `check`, `token mint|inspect`, `demo`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "contentgate",
    version,
    about = "Edge gateway for headless-CMS GraphQL content APIs (Hygraph and APIs shaped like it)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config gateway.toml` (or `CONTENTGATE_CONFIG`).
#[derive(Args, Debug)]
pub struct ConfigPath {
    /// Path to gateway.toml.
    #[arg(
        long = "config",
        short = 'c',
        env = "CONTENTGATE_CONFIG",
        default_value = "gateway.toml"
    )]
    pub path: PathBuf,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        config: ConfigPath,
        /// Take over the listening sockets of a running instance (zero-downtime upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Load and compile config and policies, print a summary; exit 1 listing every error.
    Check {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Mint, inspect and revoke Permanent Auth Tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The cluster's shared policy set in Redis (`[cluster]`): push a folder, show its state.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Start a sample Hygraph-shaped content API and the gateway in front of it, mint demo
    /// tokens, and print ready-to-paste curl commands.
    Demo {
        /// Gateway proxy port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin port (/metrics, /healthz, /readyz).
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
        /// Port of the sample content API.
        #[arg(long, default_value_t = 4000)]
        upstream_port: u16,
    },
    /// Serve only the sample content API (with its access audit) on 127.0.0.1:<port>; for
    /// integration tests and the soundness oracle.
    #[command(hide = true)]
    SampleCms {
        #[arg(long)]
        port: u16,
        /// Advertise this stage as the default of the root `stage` arguments in the SDL and
        /// serve it when a request names no stage (DRAFT or PUBLISHED).
        #[arg(long)]
        root_stage_default: Option<String>,
        /// Directory for the server's pid file and upgrade socket.
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum TokenCommand {
    /// Sign a PAT and print the JWT and the registry entry to add.
    Mint {
        /// Signing algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA).
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// Private key PEM file (RSA, EC PKCS#8, Ed25519).
        #[arg(long, conflicts_with_all = ["secret_env", "secret_file"])]
        key: Option<PathBuf>,
        /// Environment variable holding the HMAC secret (HS*).
        #[arg(long)]
        secret_env: Option<String>,
        /// File holding the HMAC secret (HS*).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Key id header; must match a configured key's kid.
        #[arg(long)]
        kid: Option<String>,
        /// Reuse an existing jti to re-issue the same token (new aud/iss/key); new UUID if absent.
        #[arg(long)]
        jti: Option<String>,
        #[arg(long)]
        iss: Option<String>,
        /// Audience; repeat for several.
        #[arg(long)]
        aud: Vec<String>,
        #[arg(long)]
        sub: Option<String>,
        /// Optional lifetime, e.g. 90d (PATs are permanent by default).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Name for the printed registry entry.
        #[arg(long, default_value = "new-token")]
        name: String,
        /// Default stage for the printed registry entry.
        #[arg(long, default_value = "PUBLISHED")]
        default_stage: String,
    },
    /// Decode a JWT; with --config, verify it and say whether its jti is active, revoked or unknown.
    Inspect {
        jwt: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Revoke jtis: in the cluster's Redis set with [cluster] (every replica within a second),
    /// else in the policies folder's revoked.txt.
    Revoke {
        #[arg(required = true)]
        jtis: Vec<String>,
        #[command(flatten)]
        config: ConfigPath,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Compile a policies folder as every replica will, show what changes, and write it to
    /// Redis as the next version of the set (atomically; refused if the set moved meanwhile).
    Push {
        /// Folder with public.toml, tokens.toml (or tokens.json), revoked.txt, schema.graphql.
        dir: PathBuf,
        #[command(flatten)]
        config: ConfigPath,
        /// Show the difference and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow the folder to drop jtis that are revoked in Redis (un-revoke them).
        #[arg(long)]
        allow_unrevoke: bool,
    },
    /// The set's version, when it was written, and whether it compiles.
    Status {
        #[command(flatten)]
        config: ConfigPath,
    },
}
