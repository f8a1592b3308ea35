//! Agent Cards: one per workspace (where A2A clients look for it, under
//! the workspace's A2A base URL) and one for the server itself. A card is
//! built from the workspace row and the `agent_card` its agent registered
//! (name, description, version and skills are taken from it when present);
//! the interfaces, security and capabilities are the server's, since the
//! server is what the client talks to.

use serde_json::{json, Value};

use crate::store::Workspace;

/// The security scheme every card names: the bearer token of a workspace
/// (or the operator's).
const SCHEME: &str = "bearer";

/// What every card says about reaching the agent at `endpoint`: both
/// versions' JSON-RPC interfaces, the bearer scheme, the capabilities this
/// server has, and the legacy 0.3 fields that 0.3 clients read.
fn served_at(endpoint: &str) -> Value {
    json!({
        "supportedInterfaces": [
            {"url": endpoint, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": endpoint, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
        ],
        "capabilities": {"streaming": true, "pushNotifications": true, "extendedAgentCard": true},
        "securitySchemes": {SCHEME: {"httpAuthSecurityScheme": {
            "scheme": "Bearer",
            "description": "a workspace token, or the operator's admin token"}}},
        "securityRequirements": [{"schemes": {SCHEME: {"list": []}}}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
    })
}

/// A registered card's string field, if it is a non-empty string.
fn text<'a>(registered: &'a Value, key: &str) -> Option<&'a str> {
    registered
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// The registered skills, each made a valid A2A skill (id, name,
/// description and tags are required); entries that are not objects are
/// dropped.
fn skills(registered: &Value) -> Vec<Value> {
    let Some(list) = registered.get("skills").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_object)
        .enumerate()
        .map(|(i, s)| {
            let mut skill = s.clone();
            let name = s
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| s.get("id").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| format!("skill-{i}"));
            skill.entry("id").or_insert_with(|| json!(name.clone()));
            skill
                .entry("description")
                .or_insert_with(|| json!(name.clone()));
            skill.entry("name").or_insert_with(|| json!(name));
            skill.entry("tags").or_insert_with(|| json!([]));
            Value::Object(skill)
        })
        .collect()
}

/// The card of a workspace whose A2A endpoint is `endpoint`.
pub(crate) fn workspace_card(w: &Workspace, endpoint: &str) -> Value {
    let registered = w.agent_card.clone().unwrap_or(Value::Null);
    let mut card = served_at(endpoint);
    card["name"] = json!(text(&registered, "name").unwrap_or(&w.name));
    card["description"] = json!(text(&registered, "description")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the molecule workspace {}", w.name)));
    card["version"] = json!(text(&registered, "version").unwrap_or("1.0.0"));
    card["skills"] = json!(skills(&registered));
    card
}

/// The server's own card: the operator's entry point, with the catalog of
/// reachable agents named in its description.
pub(crate) fn server_card(base: &str) -> Value {
    let mut card = served_at(base);
    card["name"] = json!("molecule");
    card["description"] = json!(format!(
        "A molecule server: every workspace is an A2A agent with its own card at \
         {base}/workspaces/<id>/.well-known/agent-card.json; {base}/agents lists the \
         cards the caller may reach."
    ));
    card["version"] = json!(env!("CARGO_PKG_VERSION"));
    card["skills"] = json!([]);
    card["capabilities"]["extendedAgentCard"] = json!(false);
    // The server itself takes no tasks: its agents do, each at its own
    // endpoint (in its card, listed by the catalog).
    card["supportedInterfaces"] = json!([]);
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_skills_become_valid_skills() {
        let got =
            skills(&json!({"skills": [{"name": "summarize"}, 3, {"id": "x", "tags": ["a"]}]}));
        assert_eq!(
            got,
            vec![
                json!({"id": "summarize", "name": "summarize", "description": "summarize", "tags": []}),
                json!({"id": "x", "name": "x", "description": "x", "tags": ["a"]}),
            ]
        );
    }
}
