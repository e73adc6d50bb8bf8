//! `herald serve`: the standalone dispatcher and its management REST API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use herald_api::{Config, LogFormat, Server, StartError};

/// Exit status for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;
/// Exit status when a shard's journal could not be opened: a service manager should
/// not restart the server until it is checked (e.g. systemd's
/// `RestartPreventExitStatus=3`).
const EXIT_STORAGE: u8 = 3;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file; flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// API listen address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory (journals, key store) [default: ./herald-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Shards, one thread each [default: one per core].
    #[arg(long)]
    shards: Option<usize>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Let deliveries reach this CIDR although the egress guard refuses it by default
    /// (repeatable), e.g. 10.1.0.0/16.
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    allow_cidrs: Vec<String>,
    /// Let deliveries reach loopback (127.0.0.0/8, ::1): for a receiver on this machine.
    #[arg(long)]
    allow_loopback: bool,
    /// Refuse http:// webhook URLs.
    #[arg(long)]
    require_https: bool,
    /// Signature scheme of new webhooks that name none: standard, ed25519, stripe, olo.
    #[arg(long, value_name = "SCHEME")]
    default_scheme: Option<String>,
    /// Header of stripe-scheme webhooks that name none.
    #[arg(long, value_name = "NAME")]
    stripe_header: Option<String>,
    /// PEM certificate chain: serve the API over https (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// The file (or defaults) with the flags on top.
    fn config(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::load(path).map_err(|e| e.message)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(shards) = self.shards {
            config.shards = shards;
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        config
            .egress
            .allow_cidrs
            .extend(self.allow_cidrs.iter().cloned());
        if self.allow_loopback {
            config.egress.allow_cidrs.push("127.0.0.0/8".to_string());
            config.egress.allow_cidrs.push("::1/128".to_string());
        }
        if self.require_https {
            config.egress.require_https = true;
        }
        if let Some(scheme) = &self.default_scheme {
            config.signing.default_scheme = scheme.clone();
        }
        if let Some(header) = &self.stripe_header {
            config.signing.stripe_header = header.clone();
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(herald_api::config::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        config.validate().map_err(|e| e.message)?;
        Ok(config)
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

pub fn run(args: ServeArgs) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("herald serve: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logs(config.log_format);
    let admin_key = std::env::var("HERALD_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let data_dir = config.data_dir.clone();
    let server = match Server::start(config, admin_key) {
        Ok(server) => server,
        Err(StartError::Config(message)) => {
            eprintln!("herald serve: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(StartError::Runtime(message)) => {
            eprintln!("herald serve: {message}");
            return ExitCode::FAILURE;
        }
        Err(StartError::Storage(message)) => {
            eprintln!("herald serve: {message}");
            return ExitCode::from(EXIT_STORAGE);
        }
    };
    if let Some(key) = server.generated_admin_key() {
        // Printed once: only its hash is stored. A closed standard output (`| head -1`
        // that has exited) must not lose it, nor stop the server: standard error then.
        let line = format!("admin key (shown once; only its hash is stored): {key}");
        if !crate::say(format_args!("{line}")) {
            eprintln!("{line}");
        }
    }
    // Watched before anyone hears the server is up: a SIGTERM right after the line below
    // stops it cleanly instead of killing it.
    let signals = match server.watch_signals() {
        Ok(signals) => signals,
        Err(message) => {
            eprintln!("herald serve: {message}");
            return ExitCode::FAILURE;
        }
    };
    let (shards, pinned) = server.shards();
    tracing::info!(
        listen = %server.local_addr(),
        data_dir = %data_dir.display(),
        shards,
        pinned,
        hmac_lanes = herald_sign::hmac_lanes(),
        "herald serve ready"
    );
    let _ = crate::say(format_args!("listening on {}", server.local_addr()));
    match server.run_until(signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("herald serve: {message}");
            ExitCode::FAILURE
        }
    }
}
