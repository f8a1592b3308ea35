//! Wiring: from a [`Config`] to a running server. `Application::build`
//! opens the stores, applies migrations and binds its listener (port 0 picks
//! a free one, which tests use); `run_until_stopped` serves until the
//! shutdown token fires, with the sweeper, the scheduler and the event
//! listener beside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::blob;
use crate::config::Config;
use crate::domain::Period;
use crate::events::Bus;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::private_fs;
use crate::secrets::Sealer;
use crate::store::{self, Store};
use crate::sweeper::{SweepConfig, Sweeper};

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    /// HTTPS on the main listener (`--tls-cert`); the metrics listener
    /// stays plain HTTP.
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: AppState,
    sweeper: Sweeper,
}

/// What an [`Application`] is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A server: it seals and opens secrets, so its key must be the one
    /// the database's secrets were sealed with.
    Serve,
    /// One sweep pass (`molecule sweep --once`): it never reads or writes a
    /// secret, so no key is loaded, created or checked (a pass run with its
    /// own data dir must neither fail on the server's key nor leave a key
    /// of its own behind, in the directory or in the database).
    SweepOnce,
}

impl Application {
    /// Opens the stores, migrates, and binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_as(config, Role::Serve).await
    }

    /// Like [`Application::build`], for one sweep pass: no secrets key is
    /// loaded, created or checked (see `Role::SweepOnce`).
    pub async fn build_for_sweep(config: Config) -> anyhow::Result<Self> {
        Self::build_as(config, Role::SweepOnce).await
    }

    async fn build_as(config: Config, role: Role) -> anyhow::Result<Self> {
        // Checked before anything is opened: a period that does not fit
        // the clock arithmetic is refused, never read as zero.
        let sweep_config = sweep_config(&config)?;
        let upload_ttl = Period::new("--upload-ttl", config.upload_ttl)?;
        // Also before anything is opened: a bad certificate or key is a
        // start-up error. A sweep pass serves nothing, so it loads none.
        let tls = match (role, &config.tls) {
            (Role::Serve, Some(files)) => Some(crate::serve::tls_acceptor(files)?),
            _ => None,
        };
        let (store, sealer, audit) = open_store(&config, role).await?;
        let blobs = blob::open(
            &config.blob_store,
            store.clone(),
            &config.data_dir.join("spool"),
        )
        .await
        .with_context(|| format!("failed to open the blob store {}", config.blob_store))?;
        let (listener, metrics_listener) = bind(&config).await?;
        let local = listener.local_addr()?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| default_public_url(local, tls.is_some()));
        let bus = match store.notifier() {
            Some(notifier) => Bus::shared(notifier),
            None => Bus::local(),
        };
        let metrics = Metrics::new();
        let http = crate::egress::workspace_client(config.allow_private_urls)
            .context("failed to build the HTTP client")?;
        let embedder = config
            .embeddings
            .as_ref()
            .map(|e| crate::memory::Embedder::new(&e.url, &e.model))
            .transpose()?;
        let sweeper = Sweeper::new(
            store.clone(),
            blobs.clone(),
            metrics.clone(),
            bus.clone(),
            sweep_config,
        )
        .with_embedder(embedder.clone());
        let token_uses = crate::jobs::TokenUses::default();
        // A sweep pass's key is a throw-away (see `open_store`): rows
        // sealed with it would break the chain, so it records nothing.
        let sweeper = sweeper
            .with_token_uses(token_uses.clone())
            .with_auditor(matches!(role, Role::Serve).then(|| audit.clone()));
        let state = AppState {
            store,
            blobs,
            config: Arc::new(config),
            public_url: public_url.into(),
            bus,
            metrics,
            http,
            shutdown: CancellationToken::new(),
            embedder,
            vectors: Arc::new(crate::memory::VectorCache::new(
                crate::memory::VECTOR_CACHE_BYTES,
            )),
            sealer,
            audit,
            upload_ttl,
            token_uses,
            mints: Default::default(),
            denied: Default::default(),
        };
        // A server forwards to push workspaces; a bare sweep pass
        // (`sweep --once`) does not: it exits before a forward finishes.
        let sweeper =
            sweeper.with_forwarder(matches!(role, Role::Serve).then(|| http::forwarder(&state)));
        Ok(Self {
            listener,
            metrics_listener,
            tls,
            state,
            sweeper,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The port of the separate metrics listener, if any.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// The shared state (tests reach the stores through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A sweeper over this server's stores (for tests and `sweep --once`).
    pub fn sweeper(&self) -> Sweeper {
        self.sweeper.clone()
    }

    /// Serves until `shutdown` fires; in-flight requests finish, long polls
    /// and event streams end at once.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            metrics_listener,
            tls,
            state,
            sweeper,
        } = self;
        let app_shutdown = state.shutdown.clone();
        // Spans also go to the OTLP endpoint, when one is set (first:
        // a bad endpoint fails before anything else starts).
        let otlp_task = crate::otlp::start(
            state.config.otlp_endpoint.as_deref(),
            state.store.clone(),
            state.metrics.clone(),
            app_shutdown.clone(),
        )?;
        // Before any connection: the cap must fit the descriptor limit.
        let limits = crate::serve::fit_to_fd_limit(state.config.connections);
        let metrics_limits = crate::serve::ConnLimits {
            max_connections: crate::serve::METRICS_CONNECTIONS.min(limits.max_connections),
            ..limits
        };
        let fan_out = {
            let shutdown = shutdown.clone();
            let app_shutdown = app_shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                app_shutdown.cancel();
            })
        };
        let listener_task = state.bus.spawn_listener(app_shutdown.clone());
        // The scheduler ticks every second (by default), beside the
        // five-minute sweep; `--schedule-tick 0s` leaves it to others.
        let tick = state.config.schedule_tick;
        let schedule_task = (!tick.is_zero())
            .then(|| tokio::spawn(sweeper.scheduler().run(tick, app_shutdown.clone())));
        // A2A push notifications go out right after the moves that owe
        // them; the sweeper's job retries what fails.
        let notify_task = sweeper
            .a2a_notifier()
            .map(|n| n.spawn(&state.bus, app_shutdown.clone()));
        let sweep_task = tokio::spawn(sweeper.run(app_shutdown.clone()));
        let metrics_task = metrics_listener.map(|l| {
            let metrics_state = state.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let s = metrics_state.clone();
                    async move { http::ops_metrics(&s) }
                }),
            );
            let stop = app_shutdown.clone();
            tokio::spawn(crate::serve::serve(l, app, metrics_limits, None, stop))
        });
        let store = state.store.clone();
        tracing::info!(
            addr = %listener.local_addr()?, public_url = %state.public_url, database = store.engine(),
            blob_store = state.blobs.kind(), "molecule is serving"
        );
        let router = http::router(state);
        crate::serve::serve(listener, router, limits, tls, app_shutdown.clone()).await;
        app_shutdown.cancel();
        let _ = sweep_task.await;
        for t in [notify_task, otlp_task].into_iter().flatten() {
            let _ = t.await;
        }
        if let Some(t) = schedule_task {
            let _ = t.await;
        }
        if let Some(t) = listener_task {
            let _ = t.await;
        }
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        fan_out.abort();
        store.close().await;
        tracing::info!("molecule stopped");
        Ok(())
    }
}

/// The sweep's settings from the flags, each period and size checked.
fn sweep_config(config: &Config) -> anyhow::Result<SweepConfig> {
    use crate::jobs::{MAX_DELETES_IN_FLIGHT, MAX_UPLOAD_BATCH};
    if let Some(rows) = config.sweep_batch {
        anyhow::ensure!(
            (1..=MAX_UPLOAD_BATCH).contains(&rows),
            "--sweep-batch must be between 1 and {MAX_UPLOAD_BATCH} rows, not {rows}"
        );
    }
    let in_flight = config.sweep_deletes_in_flight;
    anyhow::ensure!(
        (1..=MAX_DELETES_IN_FLIGHT).contains(&in_flight),
        "--sweep-deletes-in-flight must be between 1 and {MAX_DELETES_IN_FLIGHT}, not {in_flight}"
    );
    Ok(SweepConfig {
        ack_retention: Period::new("--ack-retention", config.ack_retention)?,
        activity_retention: Period::new("--activity-retention", config.activity_retention)?,
        delegation_stuck_after: Period::new(
            "--delegation-stuck-after",
            config.delegation_stuck_after,
        )?,
        orphan_grace: Period::new("the orphan grace", Duration::from_secs(3600))?,
        interval: config.sweep_interval,
        offline_after: Period::new("--offline-after", config.offline_after)?,
        upload_batch: config.sweep_batch.map(i64::from),
        deletes_in_flight: in_flight,
    })
}

/// Prepares the data dir, opens and migrates the database, and loads the
/// secrets key `role` needs (checked against the database when serving).
async fn open_store(
    config: &Config,
    role: Role,
) -> anyhow::Result<(Arc<dyn Store>, Sealer, crate::audit::Auditor)> {
    private_fs::prepare_data_dir(&config.data_dir).with_context(|| {
        format!(
            "failed to prepare the data dir {}",
            config.data_dir.display()
        )
    })?;
    private_fs::prepare_sqlite_file(&config.database_url)
        .context("failed to create the SQLite database file")?;
    let store = store::connect(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "failed to open the database {}",
                store::redact_url(&config.database_url)
            )
        })?;
    store
        .migrate()
        .await
        .context("failed to apply database migrations")?;
    let key = match (role, &config.secrets_key) {
        (Role::Serve, Some(key)) => key.clone(),
        (Role::Serve, None) => crate::secrets::load_or_create_key(&config.data_dir)?,
        // Never used by a pass (it neither seals nor audits); a key of its
        // own that is never stored.
        (Role::SweepOnce, _) => crate::secrets::SecretsKey::generate(),
    };
    let sealer = Sealer::new(&key);
    if role == Role::Serve {
        sealer.verify(store.as_ref()).await?;
    }
    Ok((store, sealer, crate::audit::Auditor::new(&key)))
}

/// Binds the API listener and, when configured, the metrics listener.
async fn bind(config: &Config) -> anyhow::Result<(TcpListener, Option<TcpListener>)> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to listen on {}", config.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to listen on {addr}"))?,
        ),
        None => None,
    };
    Ok((listener, metrics_listener))
}

fn default_public_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_unspecified() {
        format!("{scheme}://127.0.0.1:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        crate::signal::terminated().await;
        tracing::info!("shutdown signal received");
        fire.cancel();
    });
    token
}
