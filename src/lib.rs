//! molecule: a workspace server for AI agents.
//!
//! Layers, each depending only on those below it: `cli` and `connect` (the
//! binary's faces, reaching the server only over HTTP through `client`);
//! `http`, `sweeper`, `ledger` and `app` (the server), with `secrets` (sealing secret
//! values) and `plugin_archive` (checking published tarballs); `store` and
//! `blob` (the two storage seams); `domain` (pure types).

pub mod app;
pub mod blob;
pub mod cli;
pub mod client;
pub mod config;
pub mod connect;
pub mod domain;
pub mod egress;
pub mod events;
pub mod http;
pub mod ledger;
pub mod memory;
pub mod metrics;
pub mod plugin_archive;
pub mod private_fs;
pub mod secrets;
pub mod serve;
pub mod signal;
pub mod store;
pub mod sweeper;
pub mod telemetry;
