//! The command line: `serve`, `check`, `token …`, `policy …`, the API-access verbs
//! (`endpoints`, `stage default`, `permission …`, `token list|add|edit|delete|check|permissions`)
//! and `demo`.

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
        default_value = "gateway.toml",
        global = true
    )]
    pub path: PathBuf,
}

/// Where an API-access verb works: a running gateway's management API (`--admin URL`, the
/// credential from `CONTENTGATE_ADMIN_TOKEN`), or directly on the policy source gateway.toml
/// names (the policies folder, or the cluster's Redis set).
#[derive(Args, Debug)]
pub struct At {
    /// Base URL of a running gateway's admin listener (e.g. http://127.0.0.1:9090).
    #[arg(long, env = "CONTENTGATE_ADMIN_URL", global = true)]
    pub admin: Option<String>,
    #[command(flatten)]
    pub config: ConfigPath,
    /// Print JSON (the management API's answer) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Whose content permissions: the public API's (default) or a token's.
#[derive(Args, Debug)]
pub struct Whose {
    /// The public API's permissions (the default).
    #[arg(long, conflicts_with = "token")]
    pub public: bool,
    /// A token's permissions, by name (or jti).
    #[arg(long)]
    pub token: Option<String>,
}

/// A permission's scopes; a list flag may repeat or take comma-separated values.
#[derive(Args, Debug, Default)]
pub struct Scopes {
    #[arg(long = "model", value_delimiter = ',')]
    pub models: Vec<String>,
    #[arg(long = "locale", value_delimiter = ',')]
    pub locales: Vec<String>,
    #[arg(long = "stage", value_delimiter = ',')]
    pub stages: Vec<String>,
    /// Publish: the stages published from.
    #[arg(long = "from-stage", value_delimiter = ',')]
    pub from_stages: Vec<String>,
    /// Publish: the stages published to.
    #[arg(long = "to-stage", value_delimiter = ',')]
    pub to_stages: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum StageCommand {
    /// The default stage of public content delivery; `set STAGE` changes it.
    Default {
        #[command(subcommand)]
        set: Option<StageSet>,
        #[command(flatten)]
        at: At,
    },
}

#[derive(Subcommand, Debug)]
pub enum StageSet {
    /// Make STAGE the default public stage (one of [cms] stages).
    Set { stage: String },
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum PermissionCommand {
    /// The content permissions (filter with --action/--model/--locale/--stage, order with --sort).
    List {
        #[command(flatten)]
        whose: Whose,
        #[arg(long = "action", value_delimiter = ',')]
        actions: Vec<String>,
        #[command(flatten)]
        scopes: Scopes,
        /// model or action, optionally :desc.
        #[arg(long)]
        sort: Option<String>,
        #[command(flatten)]
        at: At,
    },
    /// Add a content permission (no --model: all models; no --locale: all locales; ...).
    Add {
        #[command(flatten)]
        whose: Whose,
        #[arg(long)]
        action: String,
        #[command(flatten)]
        scopes: Scopes,
        #[command(flatten)]
        at: At,
    },
    /// Change a permission's models, locales or stages (ID from `permission list`).
    Edit {
        id: usize,
        #[command(flatten)]
        whose: Whose,
        #[command(flatten)]
        scopes: Scopes,
        /// Widen to all models / locales / stages.
        #[arg(long)]
        all_models: bool,
        #[arg(long)]
        all_locales: bool,
        #[arg(long)]
        all_stages: bool,
        /// Only if the policy is still at this ETag (from `permission list --json`).
        #[arg(long)]
        if_match: Option<String>,
        #[command(flatten)]
        at: At,
    },
    /// Delete a permission (ID from `permission list`); asks first unless --yes.
    Delete {
        id: usize,
        #[command(flatten)]
        whose: Whose,
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        if_match: Option<String>,
        #[command(flatten)]
        at: At,
    },
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// The endpoints with their full URLs and kinds.
    Endpoints {
        #[command(flatten)]
        at: At,
    },
    /// The default stage of public content delivery.
    #[command(subcommand)]
    Stage(StageCommand),
    /// Content permissions of the public API or of a token.
    #[command(subcommand)]
    Permission(PermissionCommand),
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
    /// The tokens: name, description, default stage, jti, created/updated, revoked.
    List {
        #[command(flatten)]
        at: At,
    },
    /// Add a token (Read on all models and locales in its default stage, the basic management
    /// permissions) and print its string once.
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        default_stage: Option<String>,
        #[command(flatten)]
        at: At,
    },
    /// Change a token's name, description or default stage.
    Edit {
        /// Name or jti.
        token: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        default_stage: Option<String>,
        #[command(flatten)]
        at: At,
    },
    /// Delete a token and revoke its jti (every string ever issued for it); asks for the
    /// token's name unless --yes.
    Delete {
        /// Name or jti.
        token: String,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        at: At,
    },
    /// "Can't find your token?": decode and verify a string (`-`: read it from stdin), say which
    /// token it is and whether it is active or revoked.
    Check {
        jwt: String,
        #[command(flatten)]
        at: At,
    },
    /// Mint a fresh string for a token's jti with the current issuer, audience and key.
    Reissue {
        token: String,
        #[command(flatten)]
        at: At,
    },
    /// A token's Management API permissions: list, --enable, --disable.
    Permissions {
        token: String,
        /// The management permissions (the only kind here; content permissions: `permission`).
        #[arg(long, required = true)]
        management: bool,
        #[arg(long, value_delimiter = ',')]
        enable: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        disable: Vec<String>,
        /// List every permission, not only the enabled ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        at: At,
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
