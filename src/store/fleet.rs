//! The fleet's queries, each one indexed statement however many
//! workspaces there are: who a workspace may reach under the communication
//! rule (`/registry/:id/peers`, TEAM memory), and the workspace list a page
//! at a time (`GET /workspaces?limit=&after=`).
//!
//! The reach query is the rule of `crate::domain::team` written in SQL: the
//! same parent (roots are siblings), an ancestor up to `MAX_LEVELS` levels
//! up, a descendant up to `MAX_LEVELS` levels down, every step through live
//! workspaces. It walks parent links by primary key and child links by the
//! `(parent_id, name)` index of live rows, so it reads the caller's
//! neighbourhood only, where the listing it replaces read every workspace.
//! The contract tests compare it with the rule applied to a full listing.
//!
//! Its ids are kept per workspace in the reach cache (`store::reach_cache`)
//! with the tree generation read in the same statement; while a later
//! statement reads the same generation, the listing reads the reached rows
//! by id and the TEAM rule reads nothing more than the generation.

use async_trait::async_trait;

use serde_json::Value;
use sqlx::types::Json;

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::workspaces::{stored_mode, stored_tier, WorkspaceRow};
use super::*;

/// A workspace another may reach, with only what a peer listing shows:
/// the reach query reads these columns, not the whole row, because a
/// root's answer holds every other root.
#[derive(Debug, Clone, PartialEq)]
pub struct Reachable {
    /// Its id.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Push or poll.
    pub delivery_mode: DeliveryMode,
    /// Callback URL of a push workspace.
    pub url: Option<String>,
    /// Agent card sent at the last registration.
    pub agent_card: Option<Value>,
    /// Resource tier.
    pub tier: Tier,
    /// The inputs of its status (never removed: only live ones are reached).
    pub liveness: crate::domain::Liveness,
}

/// The columns of [`Reachable`], in the reach query's final select.
const REACHABLE_COLUMNS: &str =
    "w.id, w.name, w.delivery_mode, w.url, w.agent_card, w.tier, w.paused_at, w.error_rate, \
     w.last_heartbeat_at";

#[derive(sqlx::FromRow)]
struct ReachableRow {
    id: WorkspaceId,
    name: String,
    delivery_mode: String,
    url: Option<String>,
    agent_card: Option<Json<Value>>,
    tier: i16,
    paused_at: Option<Ts>,
    error_rate: Option<f64>,
    last_heartbeat_at: Option<Ts>,
}

impl TryFrom<ReachableRow> for Reachable {
    type Error = StoreError;
    fn try_from(r: ReachableRow) -> StoreResult<Self> {
        Ok(Reachable {
            id: r.id,
            name: r.name,
            delivery_mode: stored_mode(&r.delivery_mode)?,
            url: r.url,
            agent_card: r.agent_card.map(|j| j.0),
            tier: stored_tier(r.tier)?,
            liveness: crate::domain::Liveness {
                removed: false,
                paused: r.paused_at.is_some(),
                error_rate: r.error_rate,
                last_heartbeat_at: r.last_heartbeat_at.map(|t| t.0),
            },
        })
    }
}

/// Which workspaces one page of the list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// `Some(None)`: only roots; `Some(Some(p))`: only the children of `p`;
    /// `None`: every live workspace.
    pub parent: Option<Option<WorkspaceId>>,
    /// Start after this workspace (in the list's order: creation time,
    /// then id); it may have been removed since.
    pub after: Option<WorkspaceId>,
    /// At most this many (at least 1).
    pub limit: i64,
}

/// One page of the workspace list.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspacePage {
    /// The workspaces, oldest first.
    pub workspaces: Vec<Workspace>,
    /// Whether more follow this page.
    pub more: bool,
    /// How many live workspaces the filter matches in all.
    pub total: i64,
    /// `(parent, child)` of every live child of a workspace of the page,
    /// oldest child first.
    pub children: Vec<(WorkspaceId, WorkspaceId)>,
}

/// The fleet's indexed queries. Part of [`Store`].
#[async_trait]
pub trait FleetStore: Send + Sync {
    /// The live workspaces `id` may reach under the communication rule,
    /// itself included when live, in the list's order. For a removed `id`
    /// the answer is what the rule gives a workspace with no place in the
    /// live tree (the roots, and what still hangs below it); for an id
    /// that names no workspace, nothing.
    async fn reachable_from(&self, id: WorkspaceId) -> StoreResult<Vec<Reachable>>;

    /// The ids of [`FleetStore::reachable_from`], in the same order: what
    /// the TEAM rule of memory needs, without reading the rows.
    async fn reachable_ids(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>>;

    /// One page of the live workspaces, oldest first; `None` when
    /// `after` names no workspace at all (never created, or purged).
    async fn workspace_page(&self, query: PageQuery) -> StoreResult<Option<WorkspacePage>>;
}

/// The reach query: `$1` the workspace, `$2` the level bound; `{cols}`
/// the columns of `workspaces w` it selects. `reach` may name an id more
/// than once (`UNION ALL`: no temporary table to dedupe it); the final
/// `IN` reads each workspace once.
const REACHABLE: &str = "WITH RECURSIVE \
   me (id, parent_id, live) AS ( \
     SELECT id, CASE WHEN removed_at IS NULL THEN parent_id END, removed_at IS NULL \
     FROM workspaces WHERE id = $1), \
   up (id, parent_id, depth) AS ( \
     SELECT w.id, w.parent_id, 1 FROM workspaces w JOIN me ON w.id = me.parent_id \
     WHERE me.live AND w.removed_at IS NULL \
     UNION ALL \
     SELECT w.id, w.parent_id, u.depth + 1 FROM workspaces w JOIN up u ON w.id = u.parent_id \
     WHERE u.depth < $2 AND w.removed_at IS NULL), \
   down (id, depth) AS ( \
     SELECT w.id, 1 FROM workspaces w JOIN me ON w.parent_id = me.id \
     WHERE w.removed_at IS NULL \
     UNION ALL \
     SELECT w.id, d.depth + 1 FROM workspaces w JOIN down d ON w.parent_id = d.id \
     WHERE d.depth < $2 AND w.removed_at IS NULL), \
   reach (id) AS ( \
     SELECT id FROM up \
     UNION ALL SELECT id FROM down \
     UNION ALL SELECT w.id FROM workspaces w JOIN me ON w.parent_id = me.parent_id \
       WHERE w.removed_at IS NULL \
     UNION ALL SELECT w.id FROM workspaces w JOIN me ON me.parent_id IS NULL \
       WHERE w.parent_id IS NULL AND w.removed_at IS NULL) \
 SELECT {cols} FROM workspaces w WHERE w.id IN (SELECT id FROM reach) \
 ORDER BY w.created_at, w.id";

/// The tree generation (see `store::reach_cache`), read by the statement
/// it is added to, so it counts the tree that statement saw.
const TREE: &str = "(SELECT tree FROM reach_generation WHERE id = 1) AS tree";

/// A reached row with the generation read beside it.
#[derive(sqlx::FromRow)]
struct TaggedRow {
    #[sqlx(flatten)]
    row: ReachableRow,
    tree: i64,
}

/// Ids as the engines' `ID_LIST_1` reads them: a JSON array of strings.
fn id_list(ids: &[WorkspaceId]) -> String {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    serde_json::to_string(&ids).expect("BUG: strings serialize")
}

engines! {
    impl SqlStore<DB> {
        /// The reach query's answer for `id` with the generation it was
        /// read at, kept in the reach cache (an id that names no workspace
        /// reaches nothing and is not kept).
        async fn walk_reach<R>(&self, id: WorkspaceId, sql: &str, key: fn(&R) -> (WorkspaceId, i64))
            -> StoreResult<Vec<R>>
        where
            R: for<'r> sqlx::FromRow<'r, <DB as sqlx::Database>::Row> + Send + Unpin,
        {
            let rows: Vec<R> = sqlx::query_as(sql)
                .bind(id)
                .bind(crate::domain::team::MAX_LEVELS as i32)
                .fetch_all(&self.pool)
                .await?;
            if let Some(tree) = rows.first().map(|r| key(r).1) {
                self.reach.keep(id, tree, rows.iter().map(|r| key(r).0).collect());
            }
            Ok(rows)
        }
    }

    #[async_trait]
    impl FleetStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %id))]
        async fn reachable_from(&self, id: WorkspaceId) -> StoreResult<Vec<Reachable>> {
            static WALK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                REACHABLE.replace("{cols}", &format!("{REACHABLE_COLUMNS}, {TREE}"))
            });
            static BY_ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                format!(
                    "SELECT {REACHABLE_COLUMNS}, {TREE} FROM workspaces w WHERE w.id IN ({}) \
                     ORDER BY w.created_at, w.id",
                    DB::ID_LIST_1
                )
            });
            // The ids cached, if their generation is still the database's:
            // the rows afresh by id, the generation read beside them.
            if let Some((tree, ids)) = self.reach.last(id) {
                let rows: Vec<TaggedRow> = sqlx::query_as(&BY_ID)
                    .bind(id_list(&ids))
                    .fetch_all(&self.pool)
                    .await?;
                match rows.first().map(|r| r.tree) {
                    Some(now) if now == tree && rows.len() == ids.len() => {
                        return rows.into_iter().map(|r| r.row.try_into()).collect();
                    }
                    Some(now) => self.reach.seen(now),
                    None => {}
                }
            }
            let rows: Vec<TaggedRow> = self.walk_reach(id, &WALK, |r: &TaggedRow| (r.row.id, r.tree)).await?;
            rows.into_iter().map(|r| r.row.try_into()).collect()
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %id))]
        async fn reachable_ids(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>> {
            static WALK: std::sync::LazyLock<String> =
                std::sync::LazyLock::new(|| REACHABLE.replace("{cols}", &format!("w.id, {TREE}")));
            if let Some((tree, ids)) = self.reach.last(id) {
                let now: i64 = sqlx::query_scalar("SELECT tree FROM reach_generation WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                if now == tree {
                    return Ok(ids.to_vec());
                }
                self.reach.seen(now);
            }
            let rows: Vec<(WorkspaceId, i64)> = self.walk_reach(id, &WALK, |r: &(WorkspaceId, i64)| *r).await?;
            Ok(rows.into_iter().map(|(id, _)| id).collect())
        }

        #[tracing::instrument(skip_all, fields(limit = query.limit))]
        async fn workspace_page(&self, query: PageQuery) -> StoreResult<Option<WorkspacePage>> {
            if let Some(after) = query.after {
                let known: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM workspaces WHERE id = $1")
                        .bind(after)
                        .fetch_optional(&self.pool)
                        .await?;
                if known.is_none() {
                    return Ok(None);
                }
            }
            // The filter: the parent is bound as $1 when there is one, the
            // cursor after it.
            let parent_id = query.parent.flatten();
            let parent = match query.parent {
                None => String::new(),
                Some(None) => " AND parent_id IS NULL".to_owned(),
                Some(Some(_)) => " AND parent_id = $1".to_owned(),
            };
            let next = 1 + usize::from(parent_id.is_some());
            let cursor = match query.after {
                None => String::new(),
                Some(_) => format!(
                    " AND (created_at, id) > (SELECT created_at, id FROM workspaces WHERE id = ${next})"
                ),
            };
            let limit = next + usize::from(query.after.is_some());
            let page_sql = format!(
                "SELECT * FROM workspaces WHERE removed_at IS NULL{parent}{cursor} \
                 ORDER BY created_at, id LIMIT ${limit}"
            );
            let total_sql = format!("SELECT count(*) FROM workspaces WHERE removed_at IS NULL{parent}");
            let mut page = sqlx::query_as::<_, WorkspaceRow>(&page_sql);
            let mut total = sqlx::query_scalar::<_, i64>(&total_sql);
            if let Some(p) = parent_id {
                page = page.bind(p);
                total = total.bind(p);
            }
            if let Some(after) = query.after {
                page = page.bind(after);
            }
            // One more than asked: whether it comes tells whether more follow.
            let mut rows = page
                .bind(query.limit.saturating_add(1))
                .fetch_all(&self.pool)
                .await?;
            let more = rows.len() as i64 > query.limit;
            rows.truncate(usize::try_from(query.limit).unwrap_or(0));
            let total = total.fetch_one(&self.pool).await?;
            let workspaces: Vec<Workspace> = rows
                .into_iter()
                .map(TryInto::try_into)
                .collect::<StoreResult<_>>()?;
            let ids: Vec<String> = workspaces.iter().map(|w| w.id.to_string()).collect();
            let children_sql = format!(
                "SELECT parent_id, id FROM workspaces \
                 WHERE removed_at IS NULL AND parent_id IN ({}) ORDER BY created_at, id",
                DB::ID_LIST_1
            );
            let children: Vec<(WorkspaceId, WorkspaceId)> = sqlx::query_as(&children_sql)
                .bind(serde_json::to_string(&ids).expect("BUG: strings serialize"))
                .fetch_all(&self.pool)
                .await?;
            Ok(Some(WorkspacePage {
                workspaces,
                more,
                total,
                children,
            }))
        }
    }
}
