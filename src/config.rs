//! Configuration of `molecule serve`: one clap struct whose `///` docs are
//! the reference (`molecule serve --help`), every flag also read from its
//! environment variable, resolved into a [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytesize::ByteSize;
use clap::Args;

use crate::domain::usage::PriceTable;
use crate::domain::{AuthToken, Tier, UploadLimits};
use crate::rate::{Rate, RateFlag};
use crate::secrets::SecretsKey;
use crate::serve::{ConnLimits, TlsFiles};

/// The default of every flag that has one, written once: clap shows and
/// parses these strings, [`Config::with_defaults`] parses the same ones (a
/// unit test holds the two equal), and the other commands look for the
/// server and its data where `serve` puts them by default.
pub(crate) mod defaults {
    /// `--listen`.
    pub(crate) const LISTEN: &str = "127.0.0.1:8080";
    /// `--server` of the commands that talk to a server: the default
    /// `--listen` of `serve`.
    pub(crate) const SERVER_URL: &str = "http://127.0.0.1:8080";
    /// `--data-dir`.
    pub(crate) const DATA_DIR: &str = "./molecule-data";
    /// `--max-file-size`.
    pub(crate) const MAX_FILE_SIZE: &str = "25MiB";
    /// `--max-request-size`.
    pub(crate) const MAX_REQUEST_SIZE: &str = "50MiB";
    /// `--upload-ttl`.
    pub(crate) const UPLOAD_TTL: &str = "24h";
    /// `--ack-retention`.
    pub(crate) const ACK_RETENTION: &str = "1h";
    /// `--sweep-interval`.
    pub(crate) const SWEEP_INTERVAL: &str = "5m";
    /// `--sweep-deletes-in-flight`.
    pub(crate) const SWEEP_DELETES_IN_FLIGHT: &str = "2";
    /// `--schedule-tick`.
    pub(crate) const SCHEDULE_TICK: &str = "1s";
    /// `--activity-retention`.
    pub(crate) const ACTIVITY_RETENTION: &str = "7d";
    /// `--delegation-stuck-after`.
    pub(crate) const DELEGATION_STUCK_AFTER: &str = "10m";
    /// `--max-plugin-size`.
    pub(crate) const MAX_PLUGIN_SIZE: &str = "100MiB";
    /// `--header-read-timeout`.
    pub(crate) const HEADER_READ_TIMEOUT: &str = "30s";
    /// `--idle-timeout`.
    pub(crate) const IDLE_TIMEOUT: &str = "2m";
    /// `--max-connections`.
    pub(crate) const MAX_CONNECTIONS: &str = "4096";
    /// `--offline-after`.
    pub(crate) const OFFLINE_AFTER: &str = "90s";
    /// `--mcp-rate-limit`: Molecule's own limit.
    pub(crate) const MCP_RATE_LIMIT: &str = "120/min";
    /// `--rate-limit`: Molecule's own figure.
    pub(crate) const RATE_LIMIT: &str = "600/min";
}

/// Timeout of calls to push-mode workspaces (not a flag).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of `molecule serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MOLECULE_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,

    /// Directory for the embedded defaults: the SQLite file, blobs and the
    /// generated admin token.
    #[arg(long, env = "MOLECULE_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,

    /// Metadata database: sqlite://PATH or postgres://USER:PASS@HOST/DB.
    /// Default: sqlite://<data-dir>/molecule.db
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where file bytes live: file://PATH, s3://BUCKET[/PREFIX] (endpoint
    /// and credentials from AWS_* variables) or database.
    /// Default: file://<data-dir>/blobs
    #[arg(long, env = "MOLECULE_BLOB_STORE")]
    pub blob_store: Option<String>,

    /// The operator's token. If unset, one is generated on first start into
    /// <data-dir>/admin-token (mode 0600) and reused afterwards.
    #[arg(long, env = "MOLECULE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// The URL workspaces use to reach this server, shown in connection
    /// blocks. Default: http://<listen>
    #[arg(long, env = "MOLECULE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Largest accepted file (at most 25MiB, what workspaces accept).
    #[arg(long, env = "MOLECULE_MAX_FILE_SIZE", default_value = defaults::MAX_FILE_SIZE)]
    pub max_file_size: ByteSize,

    /// Largest accepted upload request (sum of its files).
    #[arg(long, env = "MOLECULE_MAX_REQUEST_SIZE", default_value = defaults::MAX_REQUEST_SIZE)]
    pub max_request_size: ByteSize,

    /// How long a staged file waits for its workspace before it expires.
    #[arg(long, env = "MOLECULE_UPLOAD_TTL", default_value = defaults::UPLOAD_TTL, value_parser = humantime::parse_duration)]
    pub upload_ttl: Duration,

    /// How long an acked file's row is kept before the sweep deletes it.
    #[arg(long, env = "MOLECULE_ACK_RETENTION", default_value = defaults::ACK_RETENTION, value_parser = humantime::parse_duration)]
    pub ack_retention: Duration,

    /// How often the sweeper runs (it also runs once at start-up).
    #[arg(long, env = "MOLECULE_SWEEP_INTERVAL", default_value = defaults::SWEEP_INTERVAL, value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// Rows one upload sweep batch deletes (then their blobs) in one short
    /// transaction, 1 to 50000. Unset: 5000 on PostgreSQL, 500 on SQLite
    /// (whose one writer the batch holds).
    #[arg(long, env = "MOLECULE_SWEEP_BATCH", value_name = "ROWS")]
    pub sweep_batch: Option<u32>,

    /// Blob delete requests the upload sweep keeps in flight at most (on
    /// S3 each a DeleteObjects of up to 1000 keys), 1 to 64. The sweep
    /// starts at one and uses fewer, and pauses, while the blob store
    /// answers slowly: it also serves the uploads.
    #[arg(long, env = "MOLECULE_SWEEP_DELETES_IN_FLIGHT", value_name = "N", default_value = defaults::SWEEP_DELETES_IN_FLIGHT)]
    pub sweep_deletes_in_flight: usize,

    /// How often the scheduler looks for due schedules; `0s` turns this
    /// server's scheduler off (another replica, or `molecule sweep --once`,
    /// then fires them).
    #[arg(long, env = "MOLECULE_SCHEDULE_TICK", default_value = defaults::SCHEDULE_TICK, value_parser = humantime::parse_duration)]
    pub schedule_tick: Duration,

    /// How long activity rows (the inbox and chat history) are kept.
    #[arg(long, env = "MOLECULE_ACTIVITY_RETENTION", default_value = defaults::ACTIVITY_RETENTION, value_parser = humantime::parse_duration)]
    pub activity_retention: Duration,

    /// A dispatched or in-progress delegation whose callee has not reported
    /// or heartbeated for this long is marked stuck by the sweeper.
    #[arg(long, env = "MOLECULE_DELEGATION_STUCK_AFTER", default_value = defaults::DELEGATION_STUCK_AFTER, value_parser = humantime::parse_duration)]
    pub delegation_stuck_after: Duration,

    /// Allow push-mode URLs on loopback, link-local and private networks
    /// (for development and tests; leave off in production: SSRF).
    #[arg(long, env = "MOLECULE_ALLOW_PRIVATE_URLS")]
    pub allow_private_urls: bool,

    /// Also serve /metrics, without auth, on this address.
    #[arg(long, env = "MOLECULE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// OpenAI-compatible embeddings endpoint for memory recall, the full
    /// URL (e.g. http://127.0.0.1:11434/v1/embeddings). Unset: recall by
    /// full-text rank alone.
    #[arg(long, env = "MOLECULE_EMBEDDINGS_URL", requires = "embeddings_model")]
    pub embeddings_url: Option<String>,

    /// The model to ask the embeddings endpoint for.
    #[arg(long, env = "MOLECULE_EMBEDDINGS_MODEL")]
    pub embeddings_model: Option<String>,
    /// The key secrets are encrypted with at rest: 64 hex characters. If
    /// unset, one is generated on first start into <data-dir>/secrets-key
    /// (mode 0600) and reused afterwards. Starting with a different key
    /// than the secrets were stored with fails at start-up.
    #[arg(long, env = "MOLECULE_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,

    /// Largest accepted plugin tarball (at most 100MiB).
    #[arg(long, env = "MOLECULE_MAX_PLUGIN_SIZE", default_value = defaults::MAX_PLUGIN_SIZE)]
    pub max_plugin_size: ByteSize,

    /// Time a client gets to send a complete request head; slower
    /// connections are closed.
    #[arg(long, env = "MOLECULE_HEADER_READ_TIMEOUT", default_value = defaults::HEADER_READ_TIMEOUT, value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Time a connection may stay open with no request in flight and no
    /// traffic (a parked long poll is in flight).
    #[arg(long, env = "MOLECULE_IDLE_TIMEOUT", default_value = defaults::IDLE_TIMEOUT, value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Connections served at once; more wait in the listen backlog until
    /// one ends. Keep it under the process's file-descriptor limit.
    #[arg(long, env = "MOLECULE_MAX_CONNECTIONS", default_value = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// A workspace is online while its last heartbeat is this recent; a
    /// workspace claiming active tasks whose heartbeat stopped this long
    /// ago has them reset to 0 by the sweeper (phantom busy).
    #[arg(long, env = "MOLECULE_OFFLINE_AFTER", default_value = defaults::OFFLINE_AFTER, value_parser = humantime::parse_duration)]
    pub offline_after: Duration,

    /// Tier (1–4) of a workspace whose create or import request names none.
    #[arg(long, env = "MOLECULE_DEFAULT_TIER", default_value_t = Tier::DEFAULT)]
    pub default_tier: Tier,

    /// Model of a workspace whose request names none, for every runtime
    /// except `claude-code` (which runs `sonnet`).
    #[arg(long, env = "MOLECULE_DEFAULT_MODEL", default_value = crate::domain::DEFAULT_UNIVERSAL_MODEL)]
    pub default_model: String,

    /// MCP calls (`/workspaces/:id/mcp`) one workspace token may make:
    /// `N/min`, `N/s`, `N/h` or a bare `N` (per minute); `off` for no
    /// limit. A token bucket: N at once, then one every window / N. Over
    /// it, a JSON-RPC error with HTTP 429 and `Retry-After`.
    #[arg(long, env = "MOLECULE_MCP_RATE_LIMIT", value_name = "RATE", default_value = defaults::MCP_RATE_LIMIT)]
    pub mcp_rate_limit: RateFlag,

    /// Requests one bearer token may make, and requests one client address
    /// may make without a token or with one that is refused (401): a token
    /// bucket per key, `N/min`, `N/s`, `N/h` or a bare `N` (per minute);
    /// `off` for no limit (load tests). Over it, 429 with `Retry-After`.
    /// The address is the TCP peer's: behind a proxy, every tokenless
    /// client shares the proxy's bucket.
    #[arg(long, env = "MOLECULE_RATE_LIMIT", value_name = "RATE", default_value = defaults::RATE_LIMIT)]
    pub rate_limit: RateFlag,

    /// Origins a browser may call the API from (CORS), e.g.
    /// https://ops.example.com; repeat the flag or separate with commas.
    /// Unset: no CORS headers, so browsers allow only the canvas's own
    /// origin.
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "MOLECULE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Send `Strict-Transport-Security` (one year, subdomains included) on
    /// every response: set it when clients reach this server over HTTPS
    /// only (its own `--tls-cert`, or a TLS proxy in front).
    #[arg(long, env = "MOLECULE_HSTS")]
    pub hsts: bool,

    /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`.
    /// Unset: plain HTTP (put a TLS proxy in front in production).
    #[arg(
        long,
        env = "MOLECULE_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "MOLECULE_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Offer the MCP tool `send_message_to_user` (a message to the canvas
    /// chat). On by default: the canvas is the user here.
    #[arg(long, env = "MOLECULE_MCP_SEND_MESSAGE_TO_USER", default_value_t = true, action = clap::ArgAction::Set)]
    pub mcp_send_message_to_user: bool,

    /// A JSON file of model prices, `{"model": {"input": USD, "output":
    /// USD}}` per million tokens, laid over the built-in table; they price
    /// usage reported without `cost_usd`.
    #[arg(long, env = "MOLECULE_PRICES")]
    pub prices: Option<PathBuf>,

    /// Also send every stored span (the server's and the agents') to this
    /// OTLP/HTTP endpoint, e.g. http://jaeger:4318 (`/v1/traces` is added
    /// unless the URL already ends with it). Unset: the built-in store
    /// alone serves traces.
    #[arg(long, env = "MOLECULE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// Resolved server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: String,
    /// Blob store URL.
    pub blob_store: String,
    /// The operator's token.
    pub admin_token: AuthToken,
    /// Public URL; `None` means "derive from the bound address".
    pub public_url: Option<String>,
    /// Upload limits.
    pub limits: UploadLimits,
    /// Staged-file TTL.
    pub upload_ttl: Duration,
    /// Retention of acked rows.
    pub ack_retention: Duration,
    /// Sweep period.
    pub sweep_interval: Duration,
    /// Rows per upload sweep batch; `None`: the engine's own size.
    pub sweep_batch: Option<u32>,
    /// Blob delete requests the upload sweep keeps in flight at most.
    pub sweep_deletes_in_flight: usize,
    /// Scheduler period; zero: no scheduler loop.
    pub schedule_tick: Duration,
    /// Activity retention.
    pub activity_retention: Duration,
    /// Silence after which a delegation in flight is stuck.
    pub delegation_stuck_after: Duration,
    /// SSRF switch.
    pub allow_private_urls: bool,
    /// Separate metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Timeout of calls to push-mode workspaces.
    pub forward_timeout: Duration,
    /// The secrets key; `None` means "<data-dir>/secrets-key".
    pub secrets_key: Option<SecretsKey>,
    /// Largest accepted plugin tarball, in bytes.
    pub max_plugin_size: u64,
    /// Header read timeout, idle timeout and connection cap.
    pub connections: ConnLimits,
    /// Embeddings endpoint and model of memory recall.
    pub embeddings: Option<EmbeddingsConfig>,
    /// Heartbeat window of "online", and the phantom-busy threshold.
    pub offline_after: Duration,
    /// Tier when a request names none.
    pub default_tier: Tier,
    /// Universal default model.
    pub default_model: String,
    /// Calls per token on the MCP endpoint; `None`: no limit.
    pub mcp_rate_limit: Option<Rate>,
    /// Requests per token, and per address without a valid token; `None`:
    /// no limit.
    pub rate_limit: Option<Rate>,
    /// Origins allowed by CORS; empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Whether responses carry `Strict-Transport-Security`.
    pub hsts: bool,
    /// Certificate chain and key files of HTTPS; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Whether the MCP tool `send_message_to_user` is offered.
    pub mcp_send_message_to_user: bool,
    /// Model prices (the built-in table, with `--prices` laid over it).
    pub prices: PriceTable,
    /// The OTLP/HTTP traces URL spans are exported to (`…/v1/traces`);
    /// `None`: no export.
    pub otlp_endpoint: Option<String>,
}

/// Where memory vectors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsConfig {
    /// Full URL of the OpenAI-compatible `/v1/embeddings` endpoint.
    pub url: String,
    /// The model to ask for.
    pub model: String,
}

/// Published plugins are never larger than this.
pub const HARD_MAX_PLUGIN_SIZE: u64 = 100 * 1024 * 1024;

/// The workspace side refuses files above this, so the server never accepts more.
pub const HARD_MAX_FILE_SIZE: u64 = 25 * 1024 * 1024;

impl Config {
    /// A configuration with every default, rooted at `data_dir`, with the
    /// given admin token (used by tests and embedders).
    pub fn with_defaults(data_dir: &Path, admin_token: AuthToken) -> Self {
        Self {
            listen: defaults::LISTEN.parse().expect("BUG: the default address"),
            data_dir: data_dir.to_path_buf(),
            database_url: default_database_url(data_dir),
            blob_store: default_blob_store(data_dir),
            admin_token,
            public_url: None,
            limits: UploadLimits {
                max_file_size: default_bytes(defaults::MAX_FILE_SIZE),
                max_request_size: default_bytes(defaults::MAX_REQUEST_SIZE),
            },
            upload_ttl: default_duration(defaults::UPLOAD_TTL),
            ack_retention: default_duration(defaults::ACK_RETENTION),
            sweep_interval: default_duration(defaults::SWEEP_INTERVAL),
            sweep_batch: None,
            sweep_deletes_in_flight: defaults::SWEEP_DELETES_IN_FLIGHT
                .parse()
                .expect("BUG: the default deletes in flight"),
            schedule_tick: default_duration(defaults::SCHEDULE_TICK),
            activity_retention: default_duration(defaults::ACTIVITY_RETENTION),
            delegation_stuck_after: default_duration(defaults::DELEGATION_STUCK_AFTER),
            allow_private_urls: false,
            metrics_listen: None,
            forward_timeout: FORWARD_TIMEOUT,
            embeddings: None,
            secrets_key: None,
            max_plugin_size: default_bytes(defaults::MAX_PLUGIN_SIZE),
            connections: ConnLimits {
                header_read_timeout: default_duration(defaults::HEADER_READ_TIMEOUT),
                idle_timeout: default_duration(defaults::IDLE_TIMEOUT),
                max_connections: defaults::MAX_CONNECTIONS
                    .parse()
                    .expect("BUG: the default connection cap"),
            },
            offline_after: default_duration(defaults::OFFLINE_AFTER),
            default_tier: Tier::DEFAULT,
            default_model: crate::domain::DEFAULT_UNIVERSAL_MODEL.to_owned(),
            mcp_rate_limit: Rate::parse_flag(defaults::MCP_RATE_LIMIT)
                .expect("BUG: the default MCP rate"),
            rate_limit: Rate::parse_flag(defaults::RATE_LIMIT).expect("BUG: the default rate"),
            cors_origins: Vec::new(),
            hsts: false,
            tls: None,
            mcp_send_message_to_user: true,
            prices: PriceTable::default(),
            otlp_endpoint: None,
        }
    }
}

/// The operator's token: the one given, else the one generated once into
/// the data dir (announced on stderr when it was just created).
fn admin_token_of(given: Option<String>, data_dir: &Path) -> anyhow::Result<AuthToken> {
    Ok(match given.filter(|t| !t.trim().is_empty()) {
        Some(t) => AuthToken::from_plaintext(t.trim()),
        None => {
            let (token, created) = load_or_create_admin_token(data_dir)?;
            if created {
                eprintln!(
                    "molecule: generated the admin token into {path} (mode 0600). It is shown this once:\n\n    {token}\n\n\
                     Use it as `Authorization: Bearer <token>`, or export MOLECULE_ADMIN_TOKEN=$(cat {path}).",
                    path = data_dir.join("admin-token").display(),
                    token = token.expose()
                );
            }
            token
        }
    })
}

/// The built-in price table, with the `--prices` file laid over it.
fn load_prices(path: Option<&Path>) -> anyhow::Result<PriceTable> {
    let Some(path) = path else {
        return Ok(PriceTable::default());
    };
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read --prices {}", path.display()))?;
    PriceTable::with_overrides(&raw).with_context(|| format!("--prices {}", path.display()))
}

/// A default duration; the unit test below parses every one.
fn default_duration(raw: &str) -> Duration {
    humantime::parse_duration(raw).expect("BUG: a default duration that does not parse")
}

/// The traces URL of `--otlp-endpoint`: an http(s) URL, `/v1/traces`
/// added to its path unless it ends with it (the OTLP/HTTP convention for
/// a base endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT` is read). Blank: none.
pub fn otlp_traces_url(raw: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let url = url::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    let Some(mut url) = url else {
        anyhow::bail!("--otlp-endpoint `{raw}` is not an http(s) URL (e.g. http://jaeger:4318)");
    };
    let path = url.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/v1/traces") {
        url.set_path(&format!("{path}/v1/traces"));
    }
    Ok(Some(url.to_string()))
}

/// The `--cors-origin` values, trimmed, empty ones dropped; each must be
/// an origin (`scheme://host[:port]`, no path), as browsers send it.
fn cors_origins(raw: &[String]) -> anyhow::Result<Vec<String>> {
    let mut origins = Vec::new();
    for origin in raw.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let url = url::Url::parse(origin)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .filter(|u| u.path() == "/" && u.query().is_none() && !origin.ends_with('/'));
        anyhow::ensure!(
            url.is_some(),
            "--cors-origin `{origin}` is not an origin: scheme://host[:port], no path (e.g. https://ops.example.com)"
        );
        origins.push(origin.to_owned());
    }
    Ok(origins)
}

/// A default size in bytes; the unit test below parses every one.
fn default_bytes(raw: &str) -> u64 {
    raw.parse::<ByteSize>()
        .expect("BUG: a default size that does not parse")
        .as_u64()
}

fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("molecule.db").display())
}

fn default_blob_store(data_dir: &Path) -> String {
    format!("file://{}", data_dir.join("blobs").display())
}

/// Reads the admin token from `<data_dir>/admin-token`, generating it (mode
/// 0600) on first use. Returns the token and whether it was just created.
pub fn load_or_create_admin_token(data_dir: &Path) -> anyhow::Result<(AuthToken, bool)> {
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(raw) if !raw.trim().is_empty() => {
            return Ok((AuthToken::from_plaintext(raw.trim()), false))
        }
        Ok(_) => anyhow::bail!(
            "{} is empty; delete it to generate a new admin token",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
    crate::private_fs::prepare_data_dir(data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    let token = AuthToken::generate();
    crate::private_fs::create_private_file(&path, format!("{}\n", token.expose()).as_bytes())
        .with_context(|| format!("failed to create {}", path.display()))?;
    Ok((token, true))
}

impl ServeArgs {
    /// Resolves defaults, creates the data dir and the admin token.
    pub fn resolve(self) -> anyhow::Result<Config> {
        crate::private_fs::prepare_data_dir(&self.data_dir).with_context(|| {
            format!("failed to create the data dir {}", self.data_dir.display())
        })?;
        let admin_token = admin_token_of(self.admin_token, &self.data_dir)?;
        let prices = load_prices(self.prices.as_deref())?;
        let max_file = self.max_file_size.as_u64();
        anyhow::ensure!(
            (1..=HARD_MAX_FILE_SIZE).contains(&max_file),
            "--max-file-size must be between 1 byte and 25MiB (workspaces refuse larger files)"
        );
        anyhow::ensure!(
            !self.default_model.trim().is_empty(),
            "--default-model must not be empty"
        );
        anyhow::ensure!(
            !self.offline_after.is_zero(),
            "--offline-after must be positive"
        );
        anyhow::ensure!(
            self.max_request_size.as_u64() >= 1,
            "--max-request-size must be positive"
        );
        let max_plugin_size = self.max_plugin_size.as_u64();
        anyhow::ensure!(
            (1..=HARD_MAX_PLUGIN_SIZE).contains(&max_plugin_size),
            "--max-plugin-size must be between 1 byte and 100MiB"
        );
        let secrets_key = self
            .secrets_key
            .filter(|k| !k.trim().is_empty())
            .map(|k| SecretsKey::parse(&k))
            .transpose()
            .context("--secrets-key / MOLECULE_SECRETS_KEY")?;
        anyhow::ensure!(
            self.max_connections >= 1,
            "--max-connections must be at least 1"
        );
        anyhow::ensure!(
            !self.header_read_timeout.is_zero() && !self.idle_timeout.is_zero(),
            "--header-read-timeout and --idle-timeout must be longer than zero"
        );
        let cors_origins = cors_origins(&self.cors_origins)?;
        let otlp_endpoint = otlp_traces_url(self.otlp_endpoint.as_deref())?;
        Ok(Config {
            listen: self.listen,
            database_url: self
                .database_url
                .unwrap_or_else(|| default_database_url(&self.data_dir)),
            blob_store: self
                .blob_store
                .unwrap_or_else(|| default_blob_store(&self.data_dir)),
            data_dir: self.data_dir,
            admin_token,
            public_url: self.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            limits: UploadLimits {
                max_file_size: max_file,
                max_request_size: self.max_request_size.as_u64(),
            },
            upload_ttl: self.upload_ttl,
            ack_retention: self.ack_retention,
            sweep_interval: self.sweep_interval,
            sweep_batch: self.sweep_batch,
            sweep_deletes_in_flight: self.sweep_deletes_in_flight,
            schedule_tick: self.schedule_tick,
            activity_retention: self.activity_retention,
            delegation_stuck_after: self.delegation_stuck_after,
            allow_private_urls: self.allow_private_urls,
            metrics_listen: self.metrics_listen,
            forward_timeout: FORWARD_TIMEOUT,
            secrets_key,
            max_plugin_size,
            connections: ConnLimits {
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections,
            },
            embeddings: match (self.embeddings_url, self.embeddings_model) {
                (Some(url), Some(model)) if !url.trim().is_empty() => Some(EmbeddingsConfig {
                    url: url.trim().to_owned(),
                    model: model.trim().to_owned(),
                }),
                _ => None,
            },
            offline_after: self.offline_after,
            default_tier: self.default_tier,
            default_model: self.default_model.trim().to_owned(),
            mcp_rate_limit: self.mcp_rate_limit.0,
            rate_limit: self.rate_limit.0,
            cors_origins,
            hsts: self.hsts,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => None,
            },
            mcp_send_message_to_user: self.mcp_send_message_to_user,
            prices,
            otlp_endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// `molecule serve` with no flags, and no environment either: every
    /// `env` is dropped so that a MOLECULE_* variable of the machine running
    /// the tests cannot stand in for a default.
    fn serve_args_without_flags() -> ServeArgs {
        let matches = Serve::command()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(["molecule"])
            .expect("no flag is required");
        Serve::from_arg_matches(&matches).unwrap().args
    }

    #[test]
    fn serve_without_flags_resolves_to_config_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let token = AuthToken::generate();
        let mut args = serve_args_without_flags();
        assert_eq!(args.data_dir, PathBuf::from(defaults::DATA_DIR));
        // Where the data lives and the token are given in both, not defaults.
        args.data_dir = dir.path().to_path_buf();
        args.admin_token = Some(token.expose().to_owned());
        let parsed = args.resolve().unwrap();
        let expected = Config::with_defaults(dir.path(), token);

        // Destructured with no `..`, so that a new field fails to compile
        // until it is compared here.
        macro_rules! same {
            ($($field:ident),*) => {
                let Config { $($field,)* admin_token, secrets_key } = expected;
                $(assert_eq!(parsed.$field, $field, stringify!($field));)*
                // Neither compares with `==`; both are given, or absent, alike.
                assert_eq!(parsed.admin_token.expose(), admin_token.expose());
                assert!(parsed.secrets_key.is_none() && secrets_key.is_none());
            };
        }
        same!(
            listen,
            data_dir,
            database_url,
            blob_store,
            public_url,
            limits,
            upload_ttl,
            ack_retention,
            sweep_interval,
            sweep_batch,
            sweep_deletes_in_flight,
            schedule_tick,
            activity_retention,
            delegation_stuck_after,
            allow_private_urls,
            metrics_listen,
            forward_timeout,
            max_plugin_size,
            connections,
            embeddings,
            offline_after,
            default_tier,
            default_model,
            mcp_rate_limit,
            rate_limit,
            cors_origins,
            hsts,
            tls,
            mcp_send_message_to_user,
            prices,
            otlp_endpoint
        );
    }

    #[test]
    fn the_default_server_url_is_the_default_listen_address() {
        assert_eq!(defaults::SERVER_URL, format!("http://{}", defaults::LISTEN));
    }

    #[test]
    fn the_default_sizes_are_within_the_hard_limits() {
        assert_eq!(default_bytes(defaults::MAX_FILE_SIZE), HARD_MAX_FILE_SIZE);
        assert_eq!(
            default_bytes(defaults::MAX_PLUGIN_SIZE),
            HARD_MAX_PLUGIN_SIZE
        );
    }

    #[test]
    fn the_otlp_endpoint_gets_the_traces_path() {
        let url = |raw| otlp_traces_url(Some(raw)).unwrap().unwrap();
        assert_eq!(url("http://jaeger:4318"), "http://jaeger:4318/v1/traces");
        assert_eq!(url(" http://tempo:4318/ "), "http://tempo:4318/v1/traces");
        assert_eq!(
            url("https://lf.example.com/api/public/otel"),
            "https://lf.example.com/api/public/otel/v1/traces"
        );
        assert_eq!(url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
        assert_eq!(otlp_traces_url(None).unwrap(), None);
        assert_eq!(otlp_traces_url(Some("  ")).unwrap(), None);
        for bad in ["jaeger:4318", "grpc://c:4317", "not a url"] {
            let err = otlp_traces_url(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("--otlp-endpoint"), "{bad}: {err}");
        }
    }

    #[test]
    fn cors_origins_must_be_origins() {
        let given = |raw: &[&str]| raw.iter().map(|o| o.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cors_origins(&given(&[
                " https://ops.example.com",
                "",
                "http://localhost:3000"
            ]))
            .unwrap(),
            ["https://ops.example.com", "http://localhost:3000"]
        );
        for bad in [
            "ops.example.com",
            "https://ops.example.com/",
            "https://ops.example.com/app",
            "ftp://ops.example.com",
            "*",
        ] {
            let err = cors_origins(&given(&[bad])).expect_err(bad).to_string();
            assert!(
                err.starts_with(&format!("--cors-origin `{bad}` is not an origin")),
                "{err}"
            );
        }
    }
}
