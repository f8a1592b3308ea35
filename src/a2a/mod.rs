//! The A2A standard (v1.0, with the v0.3 names kept) as molecule speaks it:
//! every workspace is an A2A agent whose tasks are delegation ledger rows.
//! The wire shapes live here, free of HTTP: the Agent Card
//! ([`card`]), the JSON-RPC envelope and A2A's error codes ([`jsonrpc`]),
//! tasks, messages and their states in both versions' JSON
//! ([`tasks`]), and push notification configs with their sender
//! ([`push`]). The routes are `http::a2a`.

pub(crate) mod card;
pub(crate) mod jsonrpc;
pub(crate) mod push;
pub(crate) mod tasks;

/// Which version's JSON a request speaks: decided by its method's name
/// (`SendMessage` is 1.0, `message/send` is 0.3), so an answer always comes
/// back in the shape its client parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// A2A 1.0: protobuf JSON (`TASK_STATE_…`, `ROLE_…`, parts without `kind`).
    V1,
    /// A2A 0.3: `kind`-tagged objects, lowercase states.
    V03,
}
