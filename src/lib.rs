//! molecule: a workspace server for AI agents.
//!
//! Layers, each depending only on those below it: `cli` and `connect` (the
//! binary's faces, reaching the server only over HTTP through `client`);
//! `http`, `sweeper` and `app` (the server); `store` and `blob` (the two
//! storage seams); `domain` (pure types).

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
pub mod memory;
pub mod metrics;
pub mod private_fs;
pub mod serve;
pub mod signal;
pub mod store;
pub mod sweeper;
pub mod telemetry;
