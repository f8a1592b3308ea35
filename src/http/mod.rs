//! The HTTP API of `shared/API.md`: one module per resource, each with its
//! handlers, assembled here into one router whose OpenAPI description is
//! generated from the same handler annotations that route requests, so the
//! document served at `/openapi.json` cannot drift from what runs.

mod a2a;
mod a2a_push;
mod a2a_stream;
mod access;
mod activity;
mod approvals;
mod audit;
mod auth;
mod canvas;
mod cron;
mod delegation_ops;
mod delegations;
mod denied;
mod edge;
mod error;
mod extract;
mod fleet;
mod instructions;
mod kv;
mod lifecycle;
mod mcp;
mod memories;
mod messages;
mod multipart;
mod ops;
mod org;
mod peers;
mod pending;
pub mod permissions;
mod plugins;
mod reads;
mod registry;
mod schedule_health;
mod schedules;
mod search;
mod secrets;
mod stream;
mod tokens;
mod traces;
mod transcript;
mod uploads;
mod usage;
mod workspaces;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::blob::BlobStore;
use crate::config::Config;
use crate::domain::Period;
use crate::events::Bus;
use crate::metrics::Metrics;
use crate::secrets::Sealer;
use crate::store::Store;

pub(crate) use activity::{ActivityView, MAX_WAIT_SECS};
pub(crate) use approvals::ApprovalView;
pub(crate) use delegations::{DelegationCreated, DelegationStatsView, DelegationView};
pub(crate) use error::{Error, ErrorBody, Json, Result};
pub(crate) use instructions::ResolvedInstructions;
pub(crate) use kv::KvView;
pub(crate) use memories::{CommittedMemory, MemoryView};
#[doc(hidden)]
pub(crate) use multipart::scan_both_ways;
pub(crate) use ops::metrics_response as ops_metrics;
pub(crate) use ops::UploadStatsView;
pub(crate) use org::ImportReport;
pub(crate) use pending::PendingUploadView;
pub(crate) use plugins::PluginView;
pub(crate) use registry::RegisteredWorkspace;
pub(crate) use schedules::{FireView, ScheduleDeleted, ScheduleView};
pub(crate) use secrets::SecretView;
pub(crate) use uploads::UploadedFiles;
pub(crate) use workspaces::{
    Connection, CreatedWorkspace, NewWorkspace, RotatedToken, WorkspaceView,
};

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Metadata.
    pub store: Arc<dyn Store>,
    /// File bytes.
    pub blobs: Arc<dyn BlobStore>,
    /// Resolved configuration.
    pub config: Arc<Config>,
    /// The URL workspaces reach this server at.
    pub public_url: Arc<str>,
    /// Wake-ups for long polls and SSE.
    pub bus: Bus,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Client for push-mode forwarding.
    pub http: reqwest::Client,
    /// Cancelled at shutdown, so long polls and streams end promptly.
    pub shutdown: CancellationToken,
    /// The embeddings endpoint of memory recall, when configured.
    pub embedder: Option<crate::memory::Embedder>,
    /// Decoded memory vectors, shared by every recall of this process.
    pub vectors: Arc<crate::memory::VectorCache>,
    /// Seals and opens secret values.
    pub sealer: Sealer,
    /// Appends to and checks the audit trail.
    pub audit: crate::audit::Auditor,
    /// How long a staged file waits (`config.upload_ttl`, checked).
    pub upload_ttl: Period,
    /// Tokens' uses not yet stamped (a job writes them in batches).
    pub token_uses: crate::jobs::TokenUses,
    /// Recent operator-token mints per client, for the mint rate limit.
    pub mints: tokens::MintLimiter,
    /// Known tokens recently refused, bounding the `token.use_denied`
    /// rows of the audit trail.
    pub denied: denied::DeniedUses,
}

/// The push forwarder over this server's state (see `crate::push`).
pub(crate) fn forwarder(state: &AppState) -> crate::push::Forwarder {
    crate::push::Forwarder {
        store: state.store.clone(),
        bus: state.bus.clone(),
        metrics: state.metrics.clone(),
        http: state.http.clone(),
        timeout: state.config.forward_timeout,
        on_answer: Some({
            let state = state.clone();
            std::sync::Arc::new(move |ws, answer| {
                let state = state.clone();
                Box::pin(async move { usage::account_answer(&state, ws, &answer).await })
            })
        }),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "molecule",
        description = "Workspace server for AI agents: chat and files to push- and poll-mode workspaces."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The routes and the OpenAPI document describing exactly them.
pub(crate) fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(workspaces::routes())
        .merge(lifecycle::routes())
        .merge(org::routes())
        .merge(registry::routes())
        .merge(messages::routes())
        .merge(a2a::routes())
        .merge(activity::routes())
        .merge(fleet::routes())
        .merge(reads::routes())
        .merge(stream::routes())
        .merge(delegations::routes())
        .merge(delegation_ops::routes())
        .merge(uploads::routes())
        .merge(plugins::routes())
        .merge(peers::routes())
        .merge(secrets::routes())
        .merge(pending::routes())
        .merge(schedules::routes())
        .merge(cron::routes())
        .merge(schedule_health::routes())
        .merge(approvals::routes())
        .merge(instructions::routes())
        .merge(audit::routes())
        .merge(memories::routes())
        .merge(search::routes())
        .merge(kv::routes())
        .merge(usage::routes())
        .merge(traces::routes())
        .merge(transcript::routes())
        .merge(mcp::routes())
        .merge(ops::routes())
        .merge(tokens::routes())
        .split_for_parts()
}

/// The whole HTTP application, inside the edge ([`edge`]: rate limits,
/// CORS, security headers).
pub(crate) fn router(state: AppState) -> Router {
    let (api, doc) = api();
    let doc = Arc::new(doc);
    let app = api
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        // The canvas page: no auth, not in the OpenAPI document.
        .merge(canvas::router())
        // JSON bodies are buffered whole: bounded here (uploads, which stream,
        // lift it for themselves).
        .layer(axum::extract::DefaultBodyLimit::max(error::JSON_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        .fallback(|| async { Error::NotFound("no such route".into()) })
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                )
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
                ),
        )
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            axum::response::IntoResponse::into_response(Error::Internal(anyhow::anyhow!(
                "handler panicked"
            )))
        }))
        .with_state(state.clone());
    edge::wrap(app, &state)
}

/// `/workspaces/{id}` → `/workspaces/:id`: the label form Molecule's
/// dashboards use.
pub(crate) fn route_label(pattern: &str) -> String {
    pattern
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!(":{name}"),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

async fn track_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_label(p.as_str()))
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .http_requests
        .with_label_values(&[&method, &path, &status])
        .inc();
    state
        .metrics
        .http_duration
        .with_label_values(&[&method, &path])
        .observe(start.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_labels_use_colon_params() {
        assert_eq!(
            super::route_label("/workspaces/{id}/chat/uploads"),
            "/workspaces/:id/chat/uploads"
        );
        assert_eq!(
            super::route_label("/workspaces/{id}/pending-uploads/{fid}/ack"),
            "/workspaces/:id/pending-uploads/:fid/ack"
        );
        assert_eq!(super::route_label("/health"), "/health");
    }
}
