//! How an MCP client reaches a workspace's tools: the endpoint URL and the
//! `mcpServers` block that Claude Code (`.mcp.json`), opencode and most
//! other clients read. The token is an environment reference
//! (`${MOLECULE_TOKEN}`, expanded by the client), never written into the
//! block or onto a command line. Built here once for the server's
//! connection block, the operator CLI and `molecule connect`.

use serde_json::{json, Value};

use super::WorkspaceId;

/// The variable the client must carry the workspace's token in.
pub const MCP_TOKEN_ENV: &str = "MOLECULE_TOKEN";

/// The Streamable HTTP endpoint of workspace `id` on `platform_url`.
pub fn mcp_url(platform_url: &str, id: WorkspaceId) -> String {
    format!("{}/workspaces/{id}/mcp", platform_url.trim_end_matches('/'))
}

/// The `{"mcpServers": {"molecule": …}}` block to paste into a client's
/// configuration.
pub fn mcp_client_config(platform_url: &str, id: WorkspaceId) -> Value {
    json!({"mcpServers": {"molecule": {
        "type": "http",
        "url": mcp_url(platform_url, id),
        "headers": {"Authorization": format!("Bearer ${{{MCP_TOKEN_ENV}}}")},
    }}})
}

/// The lines to show a person: where the block goes, how to give the
/// client the token without a command line (`token_file` holds it), and
/// the block.
pub fn mcp_setup_text(platform_url: &str, id: WorkspaceId, token_file: &str) -> String {
    let block = serde_json::to_string_pretty(&mcp_client_config(platform_url, id))
        .expect("BUG: a JSON value always serializes");
    format!(
        "# MCP clients (Claude Code: .mcp.json in the project; opencode and others: their mcpServers block).\n\
         # Start the client with the token in its environment:\n\
         #   export {MCP_TOKEN_ENV}=\"$(cat {token_file})\"\n{block}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_names_the_endpoint_and_references_the_token_variable() {
        let id = WorkspaceId::new();
        let v = mcp_client_config("https://m.example/", id);
        let server = &v["mcpServers"]["molecule"];
        assert_eq!(
            server["url"],
            format!("https://m.example/workspaces/{id}/mcp")
        );
        assert_eq!(
            server["headers"]["Authorization"],
            "Bearer ${MOLECULE_TOKEN}"
        );
        let text = mcp_setup_text("https://m.example", id, "~/.molecule/x.token");
        assert!(
            text.contains("export MOLECULE_TOKEN=\"$(cat ~/.molecule/x.token)\""),
            "{text}"
        );
    }
}
