//! molecule: a workspace server for AI agents.
//!
//! Layers, each depending only on those below it: `cli` and `connect` (the
//! binary's faces, reaching the server only over HTTP through `client`);
//! `http`, `sweeper`, `jobs`, `ledger` and `app` (the server), with `secrets`
//! (sealing secret values), `audit` (the HMAC-chained audit trail) and `plugin_archive` (checking published tarballs); `store` and
//! `blob` (the two storage seams); `domain` (pure types).
//!
//! Where things live:
//!
//! - The public modules are what the binary, the integration tests and the
//!   examples use: [`cli`] (the command line, [`cli::run`]), [`app`] (from a
//!   [`config::Config`] to a running server), [`config`] (the flags of
//!   `serve` and their defaults), [`serve`] (the connection loop and its
//!   limits), [`store`] and [`blob`] (the storage seams, with their contract
//!   tests in `tests/api/`), [`domain`] (pure types), [`sweeper`] and the
//!   background [`jobs`] it runs, [`events`] (the wake-up bus), [`memory`]
//!   (recall), [`secrets`], [`audit`], [`metrics`], [`telemetry`] and [`web`] (the
//!   canvas's modules, listed at build time).
//! - Hidden: `fuzzing`, the entry points of the cargo-fuzz targets in `fuzz/`
//!   (and of the test that replays their seeds).
//! - Crate-private: `http` (one module per resource, each with its
//!   `router()`), `client` (the typed HTTP client; it re-exports `http`'s
//!   wire types under the same names), `connect` (the workspace side),
//!   `ledger` (what surrounds a delegation move), `egress` (outbound calls
//!   to push-mode workspaces), `plugin_archive`, `private_fs` (0700/0600
//!   files) and `signal` (Ctrl-C and SIGTERM).

// Items inside crate-private modules say `pub(crate)`, so that what is
// really the outside API (used by the binary, tests and examples) shows.
#![warn(unreachable_pub)]

pub(crate) mod a2a;
pub mod app;
pub mod audit;
pub mod blob;
pub mod cli;
pub(crate) mod client;
pub mod config;
pub(crate) mod connect;
pub mod domain;
pub(crate) mod egress;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod http;
pub mod jobs;
pub(crate) mod ledger;
pub mod memory;
/// What each route needs of an operator token (the table lives with the
/// HTTP layer; the permission-matrix test walks it).
pub use http::permissions;
pub mod metrics;
pub(crate) mod otlp;
pub(crate) mod plugin_archive;
pub(crate) mod private_fs;
pub mod push;
pub mod rate;
pub mod secrets;
pub mod serve;
pub(crate) mod signal;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod web;
