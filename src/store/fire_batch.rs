//! The scheduler's batch in a few statements: a claimed batch of due
//! schedules becomes its fire rows, delegations, spans, inbox rows and
//! schedule moves in one statement per table, inside the batch's one
//! transaction, instead of about seven round trips per fire.
//!
//! A manual run ("run now") is a batch of one through the same code, due
//! at the moment it is asked for: it is never missed and leaves
//! `next_run_at` where it was. On PostgreSQL, 1,000 fires due at once
//! took about 7,000 statements one fire at a time, and their
//! per-statement cost decided the fire lag (bench/schedules.py).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use sqlx::types::Json;
use sqlx::QueryBuilder;

use super::activity::{ActivityRow, ACTIVITY_COLUMNS};
use super::delegations::{DelegationRow, IN_FLIGHT};
use super::engine::Engine;
use super::schedules::{FireRow, Fired, Schedule};
use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::inbox::{Delegate, InboxItem, InboxRow};
use crate::domain::schedule::{CronSpec, FireStatus, Overlap};
use crate::domain::{self, FireId, Hop, ScheduleId};

/// One claimed schedule's fire as decided, before anything is written.
struct Planned<'a> {
    s: &'a Schedule,
    /// The instant fired: `next_run_at`, or the moment of a manual run.
    due_at: DateTime<Utc>,
    status: FireStatus,
    detail: Option<String>,
    /// The instant after this one; `None`: the schedule never fires
    /// again (it is disabled).
    next: Option<DateTime<Utc>>,
    /// The delegation of a delivered fire: its id, idempotency key and
    /// the hop that starts its trace.
    delivery: Option<(DelegationId, String, Hop)>,
}

/// Why a due instant is skipped by the overlap policy, given the
/// earliest fire in flight and the earliest still queued, if any.
fn overlap_refusal(
    overlap: Overlap,
    in_flight: Option<DateTime<Utc>>,
    queued: Option<DateTime<Utc>>,
) -> Option<String> {
    match overlap {
        Overlap::AllowAll => None,
        Overlap::Skip => in_flight.map(|at| {
            format!(
                "the fire due at {} is still in flight (overlap policy skip)",
                at.to_rfc3339()
            )
        }),
        Overlap::BufferOne => queued.map(|at| {
            format!(
                "the fire due at {} is still waiting to be picked up (overlap policy buffer_one)",
                at.to_rfc3339()
            )
        }),
    }
}

/// The schedule as the batch leaves it (the row is locked by the claim,
/// so these are exactly the values the database then holds).
fn moved(p: &Planned<'_>, fired: bool, now: DateTime<Utc>) -> Schedule {
    let mut s = p.s.clone();
    s.next_run_at = p.next.unwrap_or(s.next_run_at);
    s.enabled = s.enabled && p.next.is_some();
    s.updated_at = now;
    if fired {
        s.last_status = Some(p.status.as_str().to_owned());
        s.last_error = p.detail.clone();
        if p.delivery.is_some() {
            s.last_run_at = Some(now);
            s.run_count += 1;
        }
    }
    s
}

engines! {
    impl SqlStore<DB> {
        /// Fires every schedule of `due` (claimed and locked by the
        /// caller, sorted by workspace) at its `next_run_at`, or at `now`
        /// when `manual` (then `next_run_at` stays), in one statement per
        /// table. Gives the fires written; a schedule whose instant had
        /// its fire already only moves on.
        pub(super) async fn fire_many_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            due: &[Schedule],
            now: DateTime<Utc>,
            budgets: bool,
            manual: bool,
        ) -> StoreResult<Vec<Fired>> {
            if due.is_empty() {
                return Ok(Vec::new());
            }
            let plans = Self::plan_in(&mut *conn, due, now, budgets, manual).await?;
            let fires = Self::insert_fires_in(&mut *conn, &plans, now).await?;
            let written: Vec<&Planned<'_>> =
                plans.iter().filter(|p| fires.contains_key(&p.s.id)).collect();
            let delivered = Self::deliver_many_in(&mut *conn, &written, now).await?;
            Self::move_schedules_in(&mut *conn, &plans, &fires, now).await?;
            let mut delivered = delivered.into_iter();
            let mut fires = fires;
            let mut out = Vec::with_capacity(written.len());
            for p in written {
                let fire = fires.remove(&p.s.id).expect("BUG: written means inserted");
                let delivered = p
                    .delivery
                    .as_ref()
                    .map(|_| delivered.next().expect("BUG: one delivery per delivered fire"));
                out.push(Fired { schedule: moved(p, true, now), fire: fire.try_into()?, delivered });
            }
            Ok(out)
        }

        /// Decides each fire: missed outside the catch-up window, skipped
        /// while a budget is spent or by the overlap policy (one query
        /// for the whole batch), else delivered.
        async fn plan_in<'a>(
            conn: &mut <DB as sqlx::Database>::Connection,
            due: &'a [Schedule],
            now: DateTime<Utc>,
            budgets: bool,
            manual: bool,
        ) -> StoreResult<Vec<Planned<'a>>> {
            let busy = Self::busy_in(&mut *conn, due).await?;
            let mut plans = Vec::with_capacity(due.len());
            for s in due {
                let (due_at, next) = if manual {
                    (now, Some(s.next_run_at))
                } else {
                    let next = CronSpec::parse(&s.cron_expr, &s.timezone)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?
                        .next_after(s.next_run_at);
                    (s.next_run_at, next)
                };
                let late = now - due_at;
                let refusal = if !manual && late > Duration::seconds(s.catch_up_s) {
                    Some((FireStatus::Missed, format!(
                        "due {}s before the scheduler reached it, outside the catch-up window of {}s",
                        late.num_seconds(),
                        s.catch_up_s
                    )))
                } else if let Some(why) = match budgets {
                    true => Self::over_budget_in(&mut *conn, s.workspace_id, now).await?,
                    false => None,
                } {
                    Some((FireStatus::Skipped, why))
                } else {
                    let (in_flight, queued) = busy.get(&s.id).copied().unwrap_or_default();
                    overlap_refusal(s.overlap, in_flight, queued).map(|why| (FireStatus::Skipped, why))
                };
                let (status, detail, delivery) = match refusal {
                    Some((status, why)) => (status, Some(why), None),
                    None => {
                        // One key per due instant: the ledger's own UNIQUE
                        // (caller, key) agrees with the fire's. A fire
                        // starts its own trace.
                        let key = format!("fire:{}", due_at.timestamp_micros());
                        (FireStatus::Delivered, None, Some((DelegationId::new(), key, Hop::open(None))))
                    }
                };
                plans.push(Planned { s, due_at, status, detail, next, delivery });
            }
            Ok(plans)
        }

        /// Per schedule of `due` whose overlap policy asks: the due
        /// instant of its earliest fire in flight, and of its earliest
        /// fire still queued.
        async fn busy_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            due: &[Schedule],
        ) -> StoreResult<HashMap<ScheduleId, (Option<DateTime<Utc>>, Option<DateTime<Utc>>)>> {
            let ids: Vec<String> = due
                .iter()
                .filter(|s| s.overlap != Overlap::AllowAll)
                .map(|s| s.id.to_string())
                .collect();
            let mut busy = HashMap::new();
            if ids.is_empty() {
                return Ok(busy);
            }
            let sql = format!(
                "SELECT f.schedule_id, d.status, MIN(f.due_at) FROM schedule_fires f \
                   JOIN delegations d ON d.id = f.delegation_id \
                 WHERE f.schedule_id IN ({}) AND d.status IN {IN_FLIGHT} \
                 GROUP BY f.schedule_id, d.status",
                DB::ID_LIST_1
            );
            let rows: Vec<(ScheduleId, String, Ts)> = sqlx::query_as(&sql)
                .bind(serde_json::to_string(&ids).expect("BUG: strings serialize"))
                .fetch_all(&mut *conn)
                .await?;
            for (id, status, at) in rows {
                let entry: &mut (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
                    busy.entry(id).or_default();
                entry.0 = Some(entry.0.map_or(at.0, |e| e.min(at.0)));
                if status == "queued" {
                    entry.1 = Some(at.0);
                }
            }
            Ok(busy)
        }

        /// The fire rows, one statement; the ones written, by schedule
        /// (an instant that had its fire already is left out: the UNIQUE
        /// guard).
        async fn insert_fires_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            plans: &[Planned<'_>],
            now: DateTime<Utc>,
        ) -> StoreResult<HashMap<ScheduleId, FireRow>> {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO schedule_fires (id, schedule_id, due_at, fired_at, status, \
                   delegation_id, detail) ",
            );
            q.push_values(plans, |mut b, p| {
                b.push_bind(FireId::new())
                    .push_bind(p.s.id)
                    .push_bind(Ts(p.due_at))
                    .push_bind(Ts(now))
                    .push_bind(p.status.as_str())
                    .push_bind(p.delivery.as_ref().map(|(id, _, _)| *id))
                    .push_bind(p.detail.clone());
            });
            q.push(" ON CONFLICT (schedule_id, due_at) DO NOTHING RETURNING *");
            let rows: Vec<FireRow> = q.build_query_as().fetch_all(&mut *conn).await?;
            Ok(rows.into_iter().map(|r| (r.schedule_id, r)).collect())
        }

        /// The delegations, their spans and the callees' inbox rows of the
        /// delivered fires among `written`, one statement each, in the
        /// order of `written`.
        async fn deliver_many_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            written: &[&Planned<'_>],
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<(Delegation, Activity)>> {
            let delivered: Vec<(&Planned<'_>, &(DelegationId, String, Hop))> = written
                .iter()
                .filter_map(|p| p.delivery.as_ref().map(|d| (*p, d)))
                .collect();
            if delivered.is_empty() {
                return Ok(Vec::new());
            }
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO delegations (id, caller_id, callee_id, task_preview, task, \
                   idempotency_key, status, deadline_at, created_at, updated_at, traceparent) ",
            );
            q.push_values(&delivered, |mut b, (p, (id, key, hop))| {
                b.push_bind(*id)
                    .push_bind(Caller::Schedule(p.s.id).to_string())
                    .push_bind(p.s.workspace_id)
                    .push_bind(domain::truncate_chars(&p.s.prompt, domain::TASK_PREVIEW_CHARS).to_owned())
                    .push_bind(p.s.prompt.clone())
                    .push_bind(key.clone())
                    .push("'queued'")
                    .push_bind(None::<Ts>)
                    .push_bind(Ts(now))
                    .push_bind(Ts(now))
                    .push_bind(hop.context.header());
            });
            q.push(" ON CONFLICT (caller_id, idempotency_key) DO NOTHING RETURNING *");
            let rows: Vec<DelegationRow> = q.build_query_as().fetch_all(&mut *conn).await?;
            if rows.len() != delivered.len() {
                return Err(StoreError::Corrupt("a fire's delegation key was used before".into()));
            }
            let mut rows: HashMap<DelegationId, Delegation> = rows
                .into_iter()
                .map(|r| Delegation::try_from(r).map(|d| (d.id, d)))
                .collect::<StoreResult<_>>()?;
            Self::open_fire_hops_in(&mut *conn, &delivered, now).await?;
            let activities = Self::insert_inbox_rows_in(&mut *conn, &delivered, now).await?;
            let mut out = Vec::with_capacity(delivered.len());
            for ((_, (id, _, _)), activity) in delivered.iter().zip(activities) {
                let row = rows.remove(id).expect("BUG: every delegation was inserted");
                out.push((row, activity));
            }
            Ok(out)
        }

        /// The server span of each delivered fire's hop, one statement
        /// (what `open_hop_in` writes for one delegation).
        async fn open_fire_hops_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            delivered: &[(&Planned<'_>, &(DelegationId, String, Hop))],
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO trace_spans (trace_id, span_id, parent_span_id, workspace_id, \
                   caller_id, delegation_id, name, kind, status, start_at, end_at, attributes, events) ",
            );
            q.push_values(delivered, |mut b, (p, (id, _, hop))| {
                b.push_bind(hop.context.trace_id())
                    .push_bind(hop.context.span_id())
                    .push_bind(hop.parent())
                    .push_bind(p.s.workspace_id)
                    .push_bind(Caller::Schedule(p.s.id).to_string())
                    .push_bind(Some(*id))
                    .push_bind("delegate")
                    .push("'server'")
                    .push_bind("queued")
                    .push_bind(Ts(now))
                    .push_bind(None::<Ts>)
                    .push_bind(Json(Value::Object(Map::new())))
                    .push_bind(Json(json!([{"name": "queued", "at": now}])));
            });
            q.push(" ON CONFLICT (trace_id, span_id) DO NOTHING");
            q.build().execute(&mut *conn).await?;
            Ok(())
        }

        /// The callees' `delegate` inbox rows, one statement after the
        /// activity-id locks of their workspaces (taken in workspace
        /// order, as the batch is sorted); in the order of `delivered`.
        async fn insert_inbox_rows_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            delivered: &[(&Planned<'_>, &(DelegationId, String, Hop))],
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<Activity>> {
            let mut workspaces: Vec<WorkspaceId> =
                delivered.iter().map(|(p, _)| p.s.workspace_id).collect();
            workspaces.dedup();
            DB::lock_activity_ids_of(&mut *conn, &workspaces).await?;
            let rows: Vec<InboxRow> = delivered
                .iter()
                .map(|(p, (id, key, hop))| {
                    InboxItem::Delegate(Delegate {
                        delegation_id: *id,
                        caller: Caller::Schedule(p.s.id),
                        callee: p.s.workspace_id,
                        task: p.s.prompt.clone(),
                        deadline: None,
                        idempotency_key: key.clone(),
                        traceparent: Some(hop.context),
                    })
                    .row()
                })
                .collect();
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO activity_logs (workspace_id, activity_type, method, source_id, \
                 target_id, summary, request_body, response_body, status, error_detail, data, created_at) ",
            );
            q.push_values(delivered.iter().zip(&rows), |mut b, ((p, _), row)| {
                b.push_bind(p.s.workspace_id)
                    .push_bind(row.activity_type.clone())
                    .push_bind(row.method.clone())
                    .push_bind(row.source_id.clone())
                    .push_bind(row.target_id.clone())
                    .push_bind(row.summary.clone())
                    .push_bind(row.request_body.clone().map(Json))
                    .push_bind(row.response_body.clone().map(Json))
                    .push_bind(row.status.clone())
                    .push_bind(row.error_detail.clone())
                    .push_bind(row.data.clone().map(Json))
                    .push_bind(Ts(now));
            });
            q.push(format!(" RETURNING {ACTIVITY_COLUMNS}"));
            let inserted: Vec<ActivityRow> = q.build_query_as().fetch_all(&mut *conn).await?;
            let mut inserted: Vec<Activity> = inserted.into_iter().map(Into::into).collect();
            // Ids are drawn row by row in the order of the VALUES list;
            // the order RETURNING gives them in is not promised.
            inserted.sort_by_key(|r| r.id);
            if inserted.len() != delivered.len()
                || inserted.iter().zip(delivered).any(|(r, (p, _))| r.workspace_id != p.s.workspace_id)
            {
                return Err(StoreError::Corrupt("the inbox rows of a batch came back out of order".into()));
            }
            Ok(inserted)
        }

        /// Every claimed schedule's move, one statement: past its instant,
        /// disabled when it never fires again, and for a written fire its
        /// last status, error, run time and count.
        async fn move_schedules_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            plans: &[Planned<'_>],
            fires: &HashMap<ScheduleId, FireRow>,
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            let mut q = QueryBuilder::<DB>::new(
                "WITH v (id, next_run_at, enabled, last_status, last_error, last_run_at, \
                   run_count, updated_at) AS (",
            );
            q.push_values(plans, |mut b, p| {
                let s = moved(p, fires.contains_key(&p.s.id), now);
                b.push_bind(s.id)
                    .push_bind(Ts(s.next_run_at))
                    .push_bind(s.enabled)
                    .push_bind(s.last_status)
                    .push_bind(s.last_error)
                    .push_bind(s.last_run_at.map(Ts))
                    .push_bind(s.run_count)
                    .push_bind(Ts(s.updated_at));
            });
            q.push(
                ") UPDATE schedules SET next_run_at = v.next_run_at, enabled = v.enabled, \
                   last_status = v.last_status, last_error = v.last_error, \
                   last_run_at = v.last_run_at, run_count = v.run_count, updated_at = v.updated_at \
                 FROM v WHERE schedules.id = v.id",
            );
            let moved = q.build().execute(&mut *conn).await?.rows_affected();
            if moved != plans.len() as u64 {
                return Err(StoreError::Corrupt(format!(
                    "a batch moved {moved} of its {} claimed schedules",
                    plans.len()
                )));
            }
            Ok(())
        }
    }
}
