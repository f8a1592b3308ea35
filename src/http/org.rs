//! Org import: create a whole team tree from a template (YAML or JSON) in
//! one transaction.
//!
//! The import is idempotent: a node whose `(parent, name)` already exists
//! among live workspaces is skipped and the import goes on into it, so
//! running a template twice leaves one tree and running it over a partial
//! tree fills in what is missing. Concurrent imports are serialized by the
//! store (see [`crate::store::Store::import_org`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Operator;
use super::extract::Query;
use super::schedules::template_def;
use super::workspaces::{check_url, record_event};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{
    self, AuthToken, DeliveryMode, FlatNode, OrgTemplate, TemplateDefaults, TemplateError,
    TemplateFormat, Tier, WorkspaceId,
};
use crate::store::{ImportNode, NewWorkspace, Saved, ScheduleDef};

/// Query of `POST /org/import`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct ImportParams {
    /// Answer what the import would do, without writing anything.
    pub dry_run: Option<bool>,
}

/// What the import did (or would do) with one template node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ImportedWorkspace {
    /// The node's name.
    pub name: String,
    /// The workspace: the existing one when skipped, the new one when
    /// created; null in a dry run for a node that would be created.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Option<WorkspaceId>,
    /// Its parent (null for a root, or for a dry-run node whose parent
    /// would be created too).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<WorkspaceId>,
    /// Its level in the template: 0 for a root node, 1 for a root's
    /// children, and so on. With the order (parents first, depth-first),
    /// this draws the tree even in a dry run, where a node whose parent
    /// would be created too has no `parent_id` to point at.
    #[serde(default)]
    pub depth: usize,
    /// True when this import created it (or, in a dry run, would).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    /// True when it already existed and was left alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Tier it has (created) or would get.
    #[schema(value_type = i64)]
    pub tier: Tier,
    /// Runtime it has (created) or would get.
    pub runtime: String,
    /// The template's schedules of this node: created, or skipped when
    /// the workspace already has one of that name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ImportedSchedule>,
    /// The token of a created workspace, shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
}

/// What the import did (or would do) with one template schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ImportedSchedule {
    /// Its name.
    pub name: String,
    /// True when this import created it (or, in a dry run, would).
    pub created: bool,
}

/// `POST /org/import` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ImportReport {
    /// True when nothing was written.
    pub dry_run: bool,
    /// One entry per template node, parents before children.
    pub workspaces: Vec<ImportedWorkspace>,
    /// Nodes created (or that would be).
    pub created: usize,
    /// Nodes that already existed.
    pub skipped: usize,
    /// E.g. "5 of 7 already existed, 2 created".
    pub summary: String,
}

/// The totals sentence of an import.
pub(super) fn summary(created: usize, skipped: usize, dry_run: bool) -> String {
    let total = created + skipped;
    let verb = if dry_run {
        "would be created"
    } else {
        "created"
    };
    format!("{skipped} of {total} already existed, {created} {verb}")
}

fn template_error(e: TemplateError) -> Error {
    match e {
        // A NUL or a bad name is 400, as `POST /workspaces` answers it.
        TemplateError::Malformed(_) | TemplateError::Nul(_) | TemplateError::Name(_) => {
            Error::BadRequest(e.to_string())
        }
        TemplateError::TooManyNodes(_) => Error::PayloadTooLarge(e.to_string()),
        TemplateError::TooDeep(_) | TemplateError::NestedTooDeep | TemplateError::Invalid(_) => {
            Error::Unprocessable(e.to_string())
        }
    }
}

/// Imports a team tree from a YAML or JSON template (`Content-Type`
/// `application/json` or `application/yaml`; sniffed when absent):
/// `{name?, defaults?: {tier, runtime, model, delivery_mode}, workspaces:
/// [{name, tier?, runtime?, model?, delivery_mode?, url?, children?}]}`.
#[utoipa::path(post, path = "/org/import", tag = "org",
    params(ImportParams),
    request_body(content = String, description = "the template, YAML or JSON",
        content_type = "application/yaml"),
    responses((status = 200, body = ImportReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn import_org(
    State(state): State<AppState>,
    _: Operator,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImportReport>> {
    let dry_run = params.dry_run.unwrap_or(false);
    let text = std::str::from_utf8(&body)
        .map_err(|_| Error::BadRequest("malformed template: the body is not UTF-8".into()))?;
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = TemplateFormat::detect(content_type, text);
    let template = OrgTemplate::parse(text, format).map_err(template_error)?;

    let flat = template.flatten();
    let (plan, tokens) = plan_import(&state, &template.defaults, &flat)?;
    let schedules = plan_schedules(&flat)?;

    let done = state
        .store
        .import_org(&plan, dry_run, domain::now())
        .await?;
    let mut entries = Vec::with_capacity(done.len());
    let nodes = plan
        .iter()
        .zip(tokens)
        .zip(&done)
        .zip(&flat)
        .zip(&schedules);
    for ((((node, token), result), (flat_node, _)), defs) in nodes {
        let schedules = import_schedules(&state, result, defs, dry_run).await?;
        if !dry_run {
            if result.created {
                record_event(&state, "workspace.created", result.id, result.parent_id).await;
            } else {
                record_event(
                    &state,
                    "org_import.skip_existing",
                    result.id,
                    result.parent_id,
                )
                .await;
            }
        }
        // A dry run rolled back: ids of would-be-created workspaces are
        // not real, so they are not shown.
        let real = |id: WorkspaceId| {
            let would_create = dry_run && plan_created(&plan, &done, id);
            (!would_create).then_some(id)
        };
        entries.push(ImportedWorkspace {
            name: node.workspace.name.clone(),
            id: real(result.id),
            parent_id: result.parent_id.and_then(real),
            depth: flat_node.depth.saturating_sub(1),
            created: result.created,
            skipped: !result.created,
            tier: node.workspace.tier,
            runtime: node.workspace.runtime.clone(),
            schedules,
            auth_token: (result.created && !dry_run).then(|| token.expose().to_owned()),
        });
    }
    let created = done.iter().filter(|d| d.created).count();
    let skipped = done.len() - created;
    tracing::info!(
        event = "org_import.done",
        created,
        skipped,
        dry_run,
        "org import"
    );
    if !dry_run {
        let entry = crate::audit::Entry::new(crate::domain::audit::Actor::Operator, "org.imported")
            .details(serde_json::json!({"created": created, "skipped": skipped}));
        super::audit::record(&state, entry).await;
    }
    Ok(Json(ImportReport {
        dry_run,
        workspaces: entries,
        created,
        skipped,
        summary: summary(created, skipped, dry_run),
    }))
}

/// The store's plan for each node of the flattened template, with the
/// token minted for it (shown once, for the workspaces created): each
/// node's settings resolved against the template's defaults, then the
/// server's; a bad one is 422 naming its place in the template.
fn plan_import(
    state: &AppState,
    defaults: &TemplateDefaults,
    flat: &[(FlatNode<'_>, String)],
) -> Result<(Vec<ImportNode>, Vec<AuthToken>)> {
    let mut plan = Vec::with_capacity(flat.len());
    let mut tokens = Vec::with_capacity(flat.len());
    for (node, path) in flat {
        let n = node.node;
        let tier = Tier::resolve(n.tier.or(defaults.tier), state.config.default_tier);
        let runtime = domain::resolve_runtime(n.runtime.as_deref().or(defaults.runtime.as_deref()))
            .map_err(|e| Error::Unprocessable(format!("{path}.runtime: {e}")))?;
        let model = domain::resolve_model(
            n.model.as_deref().or(defaults.model.as_deref()),
            &runtime,
            &state.config.default_model,
        )
        .map_err(|e| Error::Unprocessable(format!("{path}.model: {e}")))?;
        let url = n
            .url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .map(|u| check_url(state, u))
            .transpose()
            .map_err(|e| Error::Unprocessable(format!("{path}.url: {e}")))?;
        let token = AuthToken::generate();
        plan.push(ImportNode {
            parent: node.parent,
            workspace: NewWorkspace {
                name: domain::WorkspaceName::parse(&n.name)
                    .map_err(|e| Error::BadRequest(format!("{path}.name: {e}")))?
                    .into_string(),
                delivery_mode: n
                    .delivery_mode
                    .or(defaults.delivery_mode)
                    .unwrap_or(DeliveryMode::Poll),
                url,
                parent_id: None,
                tier,
                runtime,
                model,
            },
            id: WorkspaceId::new(),
            token: token.key(),
        });
        tokens.push(token);
    }
    Ok((plan, tokens))
}

/// Each node's schedules checked like the create route (400 naming the
/// schedule's place), before anything is written; a name twice in one
/// node is refused too.
fn plan_schedules(flat: &[(FlatNode<'_>, String)]) -> Result<Vec<Vec<ScheduleDef>>> {
    let now = domain::now();
    flat.iter()
        .map(|(node, path)| {
            let mut defs: Vec<ScheduleDef> = Vec::with_capacity(node.node.schedules.len());
            for (i, t) in node.node.schedules.iter().enumerate() {
                let at = format!("{path}.schedules[{i}]");
                let def = template_def(t, now).map_err(|e| match e {
                    Error::BadRequest(m) => Error::BadRequest(format!("{at}: {m}")),
                    other => other,
                })?;
                if defs.iter().any(|d| d.name == def.name) {
                    return Err(Error::BadRequest(format!(
                        "{at}.name: `{}` appears twice in this workspace's schedules",
                        def.name
                    )));
                }
                defs.push(def);
            }
            Ok(defs)
        })
        .collect()
}

/// Creates a node's schedules that its workspace does not have by name
/// (a re-import skips them: names are unique per workspace). After the
/// tree's transaction, one schedule at a time: an import cut short is
/// completed by running it again. A dry run only reads.
async fn import_schedules(
    state: &AppState,
    node: &crate::store::ImportedNode,
    defs: &[ScheduleDef],
    dry_run: bool,
) -> Result<Vec<ImportedSchedule>> {
    if defs.is_empty() {
        return Ok(Vec::new());
    }
    let existing: Vec<String> = if dry_run && node.created {
        Vec::new()
    } else {
        let rows = state.store.list_schedules(node.id).await?;
        rows.into_iter().map(|s| s.name).collect()
    };
    let mut out = Vec::with_capacity(defs.len());
    for def in defs {
        let mut created = !existing.contains(&def.name);
        if created && !dry_run {
            created = match state
                .store
                .create_schedule(node.id, def, domain::now())
                .await?
            {
                Saved::Saved(s) => {
                    tracing::info!(schedule_id = %s.id, workspace_id = %s.workspace_id,
                        name = %s.name, "schedule created by org import");
                    true
                }
                Saved::NameTaken | Saved::NotFound => false,
            };
        }
        out.push(ImportedSchedule {
            name: def.name.clone(),
            created,
        });
    }
    Ok(out)
}

/// Whether `id` is one the import created (in a dry run: would create).
fn plan_created(plan: &[ImportNode], done: &[crate::store::ImportedNode], id: WorkspaceId) -> bool {
    plan.iter().zip(done).any(|(p, d)| d.created && p.id == id)
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(import_org))
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_reads_as_a_sentence() {
        assert_eq!(
            super::summary(2, 5, false),
            "5 of 7 already existed, 2 created"
        );
        assert_eq!(
            super::summary(3, 0, true),
            "0 of 3 already existed, 3 would be created"
        );
    }
}
