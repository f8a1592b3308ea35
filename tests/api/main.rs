//! The integration test binary: every suite runs against real servers on
//! 127.0.0.1 and real storage engines (SQLite always; PostgreSQL and the
//! S3-compatible server when `.ci/run` has started them).

mod helpers;

mod a2a;
mod a2a_clients;
mod a2a_push;
mod a2a_stream;

mod activity_cursor;
mod agent;
mod approval_tasks;
mod approvals;
mod audit;
mod blob_contract;
mod canvas;
mod clients;
mod connect_e2e;
mod connect_files;
mod cron_preview;
mod db_down;
mod delegation_ops;
mod delegations;
mod disk_full;
mod edge;
mod files_to_user;
mod fleet_queries;
mod fuzzing;
mod hardening;
mod inbox;
mod instructions;
mod mcp;
mod mcp_tasks;
mod memory;
mod otlp;
mod pending;
mod plugins;
mod push_delegations;
mod reads;
mod replica_chaos;
mod replicas;
mod revocation;
mod s3_ingest;
mod schedule_chaos;
mod schedule_health;
mod schedule_surfaces;
mod schedules;
mod search;
mod secrets;
mod store_contract;
mod sweep;
mod team_rule;
mod teams;
mod tokens;
mod traces;
mod uploads;
mod usage;
mod work_chaos;
mod workspaces;
