//! Org templates: a tree of workspaces to create in one import, written in
//! YAML or JSON.
//!
//! Parsing refuses unknown fields, so a typo is an error naming the field
//! and its line instead of a silently ignored setting. [`OrgTemplate::parse`]
//! also enforces the size limits: at most [`MAX_TEMPLATE_NODES`] nodes and
//! [`MAX_TEMPLATE_DEPTH`] levels.

use serde::Deserialize;

use super::{DeliveryMode, Tier};

/// Most nodes one template may hold.
pub const MAX_TEMPLATE_NODES: usize = 1000;
/// Deepest a template may nest (a root is level 1).
pub const MAX_TEMPLATE_DEPTH: usize = 16;

/// How a template is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

impl TemplateFormat {
    /// The format a `Content-Type` names; without one, a body starting
    /// with `{` is JSON and anything else YAML.
    pub fn detect(content_type: Option<&str>, body: &str) -> Self {
        let essence = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("application/json") => TemplateFormat::Json,
            Some(c) if c.contains("yaml") => TemplateFormat::Yaml,
            _ if body.trim_start().starts_with('{') => TemplateFormat::Json,
            _ => TemplateFormat::Yaml,
        }
    }
}

/// Settings every node inherits unless it sets its own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDefaults {
    /// Tier.
    pub tier: Option<Tier>,
    /// Runtime.
    pub runtime: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Delivery mode.
    pub delivery_mode: Option<DeliveryMode>,
}

/// One workspace of the tree.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateNode {
    /// Display name; unique among its siblings for idempotency.
    pub name: String,
    /// Tier.
    pub tier: Option<Tier>,
    /// Runtime.
    pub runtime: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Delivery mode (`poll` when neither node nor defaults say).
    pub delivery_mode: Option<DeliveryMode>,
    /// Callback URL (push mode).
    pub url: Option<String>,
    /// Its children.
    #[serde(default)]
    pub children: Vec<TemplateNode>,
}

/// A whole template.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgTemplate {
    /// A name for the template (informational).
    pub name: Option<String>,
    /// Inherited settings.
    #[serde(default)]
    pub defaults: TemplateDefaults,
    /// The root workspaces.
    pub workspaces: Vec<TemplateNode>,
}

/// Why a template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not parseable: the sentence names the line and field.
    #[error("malformed template: {0}")]
    Malformed(String),
    /// More than [`MAX_TEMPLATE_NODES`] nodes.
    #[error(
        "the template has {0} workspaces; at most {MAX_TEMPLATE_NODES} may be imported at once"
    )]
    TooManyNodes(usize),
    /// Deeper than [`MAX_TEMPLATE_DEPTH`].
    #[error("the template nests {0} levels deep; at most {MAX_TEMPLATE_DEPTH} are allowed")]
    TooDeep(usize),
    /// Parseable, but a value is unacceptable; the sentence names the node.
    #[error("{0}")]
    Invalid(String),
}

/// One node in pre-order, with where it sits.
#[derive(Debug, Clone, Copy)]
pub struct FlatNode<'a> {
    /// Index of its parent in the flattened list.
    pub parent: Option<usize>,
    /// Its level (a root is 1).
    pub depth: usize,
    /// The node.
    pub node: &'a TemplateNode,
}

impl OrgTemplate {
    /// Parses and checks a template: well-formed, within the limits, every
    /// name 1–200 characters, and every push-mode node with a `url`.
    pub fn parse(body: &str, format: TemplateFormat) -> Result<Self, TemplateError> {
        let template: OrgTemplate = match format {
            TemplateFormat::Json => serde_json::from_str(body)
                .map_err(|e| TemplateError::Malformed(format!("{e} (JSON, line {})", e.line())))?,
            // serde_norway's message names the field path and line/column.
            TemplateFormat::Yaml => serde_norway::from_str(body)
                .map_err(|e| TemplateError::Malformed(format!("{e} (YAML)")))?,
        };
        let (count, depth) = template.measure();
        if count > MAX_TEMPLATE_NODES {
            return Err(TemplateError::TooManyNodes(count));
        }
        if depth > MAX_TEMPLATE_DEPTH {
            return Err(TemplateError::TooDeep(depth));
        }
        template.check_nodes()?;
        Ok(template)
    }

    /// Node count and depth.
    fn measure(&self) -> (usize, usize) {
        fn walk(n: &TemplateNode, level: usize, count: &mut usize, depth: &mut usize) {
            *count += 1;
            *depth = (*depth).max(level);
            for c in &n.children {
                walk(c, level + 1, count, depth);
            }
        }
        let (mut count, mut depth) = (0, 0);
        for r in &self.workspaces {
            walk(r, 1, &mut count, &mut depth);
        }
        (count, depth)
    }

    fn check_nodes(&self) -> Result<(), TemplateError> {
        fn walk(
            n: &TemplateNode,
            path: String,
            defaults: &TemplateDefaults,
        ) -> Result<(), TemplateError> {
            let name = n.name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(TemplateError::Invalid(format!(
                    "{path}.name: `name` must be 1 to 200 characters"
                )));
            }
            let mode = n
                .delivery_mode
                .or(defaults.delivery_mode)
                .unwrap_or(DeliveryMode::Poll);
            let has_url = n.url.as_deref().is_some_and(|u| !u.trim().is_empty());
            if mode == DeliveryMode::Push && !has_url {
                return Err(TemplateError::Invalid(format!(
                    "{path}.url: workspace `{name}` is push-mode and needs a `url` to forward to"
                )));
            }
            for (i, c) in n.children.iter().enumerate() {
                walk(c, format!("{path}.children[{i}]"), defaults)?;
            }
            Ok(())
        }
        for (i, r) in self.workspaces.iter().enumerate() {
            walk(r, format!("workspaces[{i}]"), &self.defaults)?;
        }
        Ok(())
    }

    /// Every node in pre-order (a parent before its children), with the
    /// index of its parent and its path (e.g. `workspaces[0].children[2]`,
    /// for error messages).
    pub fn flatten(&self) -> Vec<(FlatNode<'_>, String)> {
        fn walk<'a>(
            n: &'a TemplateNode,
            parent: Option<usize>,
            depth: usize,
            path: String,
            out: &mut Vec<(FlatNode<'a>, String)>,
        ) {
            let me = out.len();
            out.push((
                FlatNode {
                    parent,
                    depth,
                    node: n,
                },
                path.clone(),
            ));
            for (i, c) in n.children.iter().enumerate() {
                walk(c, Some(me), depth + 1, format!("{path}.children[{i}]"), out);
            }
        }
        let mut out = Vec::new();
        for (i, r) in self.workspaces.iter().enumerate() {
            walk(r, None, 1, format!("workspaces[{i}]"), &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "defaults:\n  tier: 2\nworkspaces:\n  - name: lead\n    children:\n      - name: a\n      - name: b\n        runtime: claude-code\n";

    #[test]
    fn yaml_and_json_parse_to_the_same_tree() {
        let y = OrgTemplate::parse(YAML, TemplateFormat::Yaml).unwrap();
        let j = OrgTemplate::parse(
            r#"{"defaults":{"tier":2},"workspaces":[{"name":"lead","children":[{"name":"a"},{"name":"b","runtime":"claude-code"}]}]}"#,
            TemplateFormat::Json,
        )
        .unwrap();
        assert_eq!(y, j);
        let flat = y.flatten();
        assert_eq!(flat.len(), 3);
        assert_eq!(flat[2].0.parent, Some(0));
        assert_eq!(flat[2].1, "workspaces[0].children[1]");
    }

    #[test]
    fn malformed_yaml_names_the_field_and_line() {
        let bad = "workspaces:\n  - name: lead\n    children:\n      - nmae: a\n";
        let err = OrgTemplate::parse(bad, TemplateFormat::Yaml).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nmae"), "{text}");
        assert!(text.contains("line 4"), "{text}");
        let bad_tier = "workspaces:\n  - name: lead\n    tier: 9\n";
        let text = OrgTemplate::parse(bad_tier, TemplateFormat::Yaml)
            .unwrap_err()
            .to_string();
        assert!(text.contains("`tier`") && text.contains("line 2"), "{text}");
    }

    #[test]
    fn limits_are_enforced() {
        let wide = format!(
            "{{\"workspaces\":[{}]}}",
            (0..1001)
                .map(|i| format!("{{\"name\":\"n{i}\"}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(
            OrgTemplate::parse(&wide, TemplateFormat::Json),
            Err(TemplateError::TooManyNodes(1001))
        );
        let mut deep = String::from("{\"name\":\"leaf\"}");
        for i in 0..16 {
            deep = format!("{{\"name\":\"n{i}\",\"children\":[{deep}]}}");
        }
        let deep = format!("{{\"workspaces\":[{deep}]}}");
        assert_eq!(
            OrgTemplate::parse(&deep, TemplateFormat::Json),
            Err(TemplateError::TooDeep(17))
        );
    }

    #[test]
    fn push_nodes_need_a_url() {
        let t = "workspaces:\n  - name: a\n    children:\n      - name: b\n        delivery_mode: push\n";
        assert_eq!(
            OrgTemplate::parse(t, TemplateFormat::Yaml),
            Err(TemplateError::Invalid(
                "workspaces[0].children[0].url: workspace `b` is push-mode and needs a `url` to forward to".into()
            ))
        );
    }
}
