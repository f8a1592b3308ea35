//! Tokens: a workspace's (`/workspaces/:id/tokens`) and the operator
//! tokens (`/org/tokens`), listed, minted and revoked. Answers are kept as
//! JSON: the CLI prints them as they come.

use reqwest::Method;
use serde_json::{json, Value};

use super::{Client, Result, REQUEST_TIMEOUT};

/// Whose tokens: a workspace's, or the operators'.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tokens<'a> {
    /// The workspace with this id.
    Workspace(&'a str),
    /// The operator tokens.
    Org,
}

impl Tokens<'_> {
    fn path(&self) -> String {
        match self {
            Tokens::Workspace(id) => format!("workspaces/{id}/tokens"),
            Tokens::Org => "org/tokens".to_owned(),
        }
    }
}

/// What to mint.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenSpec {
    /// A label.
    pub name: Option<String>,
    /// Seconds until it stops working.
    pub expires_in_s: Option<i64>,
    /// Operator tokens: `admin`, `operator` or `viewer`.
    pub role: Option<String>,
    /// Operator tokens: the team subtree it is limited to.
    pub team_root: Option<String>,
}

impl Client {
    /// `GET /workspaces/:id/tokens` or `GET /org/tokens`.
    pub(crate) async fn list_tokens(&self, whose: Tokens<'_>) -> Result<Value> {
        self.json(
            self.request(Method::GET, &format!("{}?limit=500", whose.path()))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:id/tokens` or `POST /org/tokens`: the answer
    /// holds the secret, shown once.
    pub(crate) async fn create_token(&self, whose: Tokens<'_>, spec: &TokenSpec) -> Result<Value> {
        let mut body = json!({});
        for (key, value) in [
            ("name", spec.name.clone().map(Value::from)),
            ("expires_in_s", spec.expires_in_s.map(Value::from)),
            ("role", spec.role.clone().map(Value::from)),
            ("team_root", spec.team_root.clone().map(Value::from)),
        ] {
            if let Some(v) = value {
                body[key] = v;
            }
        }
        self.json(
            self.request(Method::POST, &whose.path())
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `DELETE /workspaces/:id/tokens/:tid` or `DELETE /org/tokens/:tid`.
    pub(crate) async fn revoke_token(&self, whose: Tokens<'_>, token_id: &str) -> Result<Value> {
        self.json(
            self.request(Method::DELETE, &format!("{}/{token_id}", whose.path()))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }
}
