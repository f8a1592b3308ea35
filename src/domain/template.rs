//! Org templates: a tree of workspaces to create in one import, written in
//! YAML or JSON.
//!
//! Parsing refuses unknown fields, so a typo is an error naming the field
//! and its line instead of a silently ignored setting. [`OrgTemplate::parse`]
//! also enforces the size limits: at most [`MAX_TEMPLATE_NODES`] nodes and
//! [`MAX_TEMPLATE_DEPTH`] levels.
//!
//! The parsers (serde_json, serde_norway) recurse once per nesting level of
//! the text. So before they run, [`nesting_bound`] scans the text without
//! recursion for an upper bound of how deep it nests; a text over
//! [`MAX_NESTING`] is refused with the depth rule and never reaches them,
//! and every walk over the parsed tree here uses an explicit stack.

use serde::Deserialize;

use super::{DeliveryMode, Tier, WorkspaceName};

/// Most nodes one template may hold.
pub const MAX_TEMPLATE_NODES: usize = 1000;
/// Deepest a template may nest (a root is level 1).
pub const MAX_TEMPLATE_DEPTH: usize = 16;

/// Deepest nesting of brackets, sequences and mappings the parsers are
/// handed. A template at the depth limit nests about `2 × 16 + 1` in JSON
/// and at most about twice that by the YAML scan's bound; the parsers' own
/// limit is 128, so they never stop on theirs.
pub const MAX_NESTING: usize = 100;

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
    /// Its schedules (Molecule's `OrgSchedule`); an import creates the
    /// ones whose name the workspace does not have yet.
    #[serde(default)]
    pub schedules: Vec<TemplateSchedule>,
    /// Its children.
    #[serde(default)]
    pub children: Vec<TemplateNode>,
}

/// One schedule of a template node, checked like `POST
/// /workspaces/:id/schedules` (the overlap policy and catch-up window take
/// their defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSchedule {
    /// Unique within the workspace: what makes a re-import skip it.
    pub name: String,
    /// Five-field cron or a macro.
    pub cron_expr: String,
    /// IANA zone; default UTC.
    pub timezone: Option<String>,
    /// What the agent is asked on each fire.
    pub prompt: String,
    /// Default true.
    pub enabled: Option<bool>,
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
    /// So deep that it was not parsed at all (over [`MAX_NESTING`]).
    #[error("the template nests more than {MAX_TEMPLATE_DEPTH} levels deep; at most {MAX_TEMPLATE_DEPTH} are allowed")]
    NestedTooDeep,
    /// A string holds a NUL character, which no workspace field may (the
    /// same answer the JSON routes give); the path names the field.
    #[error("`{0}` must not contain NUL characters (\\u0000)")]
    Nul(String),
    /// Parseable, but a value is unacceptable; the sentence names the node.
    #[error("{0}")]
    Invalid(String),
    /// A node's name breaks [`WorkspaceName`]'s rule (as `POST
    /// /workspaces` would refuse it); the sentence names the node.
    #[error("{0}")]
    Name(String),
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
        if nesting_bound(body, format) > MAX_NESTING {
            return Err(TemplateError::NestedTooDeep);
        }
        // The parsers' own recursion limit cannot be met under the bound;
        // should the YAML scan ever undercount, it still answers the rule.
        let too_deep = |msg: &str| msg.contains("recursion limit exceeded");
        let template: OrgTemplate = match format {
            TemplateFormat::Json => serde_json::from_str(body).map_err(|e| {
                if too_deep(&e.to_string()) {
                    TemplateError::NestedTooDeep
                } else {
                    TemplateError::Malformed(format!("{e} (JSON, line {})", e.line()))
                }
            })?,
            // serde_norway's message names the field path and line/column.
            TemplateFormat::Yaml => serde_norway::from_str(body).map_err(|e| {
                if too_deep(&e.to_string()) {
                    TemplateError::NestedTooDeep
                } else {
                    TemplateError::Malformed(format!("{e} (YAML)"))
                }
            })?,
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
        let (mut count, mut depth) = (0, 0);
        let mut stack: Vec<(&TemplateNode, usize)> =
            self.workspaces.iter().map(|r| (r, 1)).collect();
        while let Some((n, level)) = stack.pop() {
            count += 1;
            depth = depth.max(level);
            stack.extend(n.children.iter().map(|c| (c, level + 1)));
        }
        (count, depth)
    }

    /// Every string free of NUL, every name 1–200 characters, every
    /// push-mode node with a `url`.
    fn check_nodes(&self) -> Result<(), TemplateError> {
        let nul = |field: String, value: Option<&str>| match value {
            Some(v) if v.contains('\0') => Err(TemplateError::Nul(field)),
            _ => Ok(()),
        };
        nul("name".into(), self.name.as_deref())?;
        nul("defaults.runtime".into(), self.defaults.runtime.as_deref())?;
        nul("defaults.model".into(), self.defaults.model.as_deref())?;
        let defaults = &self.defaults;
        for (flat, path) in self.flatten() {
            let n = flat.node;
            nul(format!("{path}.name"), Some(&n.name))?;
            nul(format!("{path}.runtime"), n.runtime.as_deref())?;
            nul(format!("{path}.model"), n.model.as_deref())?;
            nul(format!("{path}.url"), n.url.as_deref())?;
            for (i, sc) in n.schedules.iter().enumerate() {
                let at = format!("{path}.schedules[{i}]");
                nul(format!("{at}.name"), Some(&sc.name))?;
                nul(format!("{at}.cron_expr"), Some(&sc.cron_expr))?;
                nul(format!("{at}.timezone"), sc.timezone.as_deref())?;
                nul(format!("{at}.prompt"), Some(&sc.prompt))?;
            }
            let name = WorkspaceName::parse(&n.name)
                .map_err(|e| TemplateError::Name(format!("{path}.name: {e}")))?;
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
        }
        Ok(())
    }

    /// Every node in pre-order (a parent before its children), with the
    /// index of its parent and its path (e.g. `workspaces[0].children[2]`,
    /// for error messages).
    pub fn flatten(&self) -> Vec<(FlatNode<'_>, String)> {
        let mut out = Vec::new();
        // (node, parent index, level, path), last pushed first out: roots
        // and children go on in reverse so they come off in order.
        let mut stack: Vec<(&TemplateNode, Option<usize>, usize, String)> = self
            .workspaces
            .iter()
            .enumerate()
            .rev()
            .map(|(i, r)| (r, None, 1, format!("workspaces[{i}]")))
            .collect();
        while let Some((node, parent, depth, path)) = stack.pop() {
            let me = out.len();
            for (i, c) in node.children.iter().enumerate().rev() {
                stack.push((c, Some(me), depth + 1, format!("{path}.children[{i}]")));
            }
            out.push((
                FlatNode {
                    parent,
                    depth,
                    node,
                },
                path,
            ));
        }
        out
    }
}

/// An upper bound of how deeply `body` nests (brackets, sequences,
/// mappings), found without recursion and without building anything; it
/// stops counting past [`MAX_NESTING`]. Exact for JSON; for YAML it counts
/// every indentation step and every indicator on a line as a level, so it
/// may say more than the parser would see, never less for the layouts the
/// scan understands (see the unit tests and the property below).
pub fn nesting_bound(body: &str, format: TemplateFormat) -> usize {
    match format {
        TemplateFormat::Json => json_nesting(body),
        TemplateFormat::Yaml => yaml_nesting(body),
    }
}

fn json_nesting(body: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in body.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > MAX_NESTING {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn yaml_nesting(body: &str) -> usize {
    let mut max = 0usize;
    // Indentations of the open block nodes, innermost last.
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a quoted scalar that goes on to the next line.
    let mut quote: Option<char> = None;
    // Inside a block scalar (`|`, `>`): lines indented past this are text.
    let mut block_scalar: Option<usize> = None;
    for line in body.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = line[indent..].trim_end();
        if let Some(parent) = block_scalar {
            if rest.is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if quote.is_none() && flow == 0 {
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        let mut inline = 0usize;
        let mut token_start = true;
        // Columns where the last two tokens on this line begin: a block
        // scalar's text must be indented past the node before `|`/`>`
        // (the key, or the `-` of a sequence entry).
        let (mut prev_col, mut last_col) = (indent, indent);
        let mut last_token = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let next = chars.peek().map(|&(_, n)| n);
            if let Some(q) = quote {
                match c {
                    '\\' if q == '"' => {
                        chars.next();
                    }
                    // `''` is a quote inside a single-quoted scalar.
                    '\'' if q == '\'' && next == Some('\'') => {
                        chars.next();
                    }
                    _ if c == q => quote = None,
                    _ => {}
                }
                continue;
            }
            if c == ' ' || c == '\t' {
                token_start = true;
                continue;
            }
            if token_start {
                (prev_col, last_col) = (last_col, indent + i);
                last_token.clear();
            }
            let spaced = next.is_none_or(|n| n == ' ' || n == '\t');
            match c {
                '#' if token_start => break,
                '"' | '\'' if token_start => quote = Some(c),
                '[' | '{' if token_start || flow > 0 => {
                    flow += 1;
                    inline += 1;
                }
                ']' | '}' if flow > 0 => flow -= 1,
                '-' | '?' if token_start && spaced && flow == 0 => inline += 1,
                ':' if spaced || flow > 0 => inline += 1,
                _ => {}
            }
            last_token.push(c);
            token_start = flow > 0 && matches!(c, ',' | '[' | '{');
        }
        let bound = 2 * indents.len() + inline + flow + 2;
        max = max.max(bound);
        if max > MAX_NESTING {
            return max;
        }
        let is_block_indicator = |t: &str| {
            let mut cs = t.chars();
            matches!(cs.next(), Some('|' | '>'))
                && cs.all(|c| c.is_ascii_digit() || c == '+' || c == '-')
        };
        if quote.is_none() && flow == 0 && last_col > indent && is_block_indicator(&last_token) {
            block_scalar = Some(prev_col);
        } else if quote.is_none() && flow == 0 && is_block_indicator(&last_token) {
            // `|` alone on a line: its text is indented past this line.
            block_scalar = Some(indent);
        }
    }
    max
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

    /// A chain of `levels` nested nodes in JSON.
    fn deep_json(levels: usize) -> String {
        let mut out = String::from("{\"workspaces\":[");
        for i in 0..levels {
            out.push_str(&format!("{{\"name\":\"n{i}\",\"children\":["));
        }
        for _ in 0..levels {
            out.push_str("]}");
        }
        out.push_str("]}");
        out
    }

    /// A chain of `levels` nested nodes in YAML, in one of several
    /// layouts (block, block with the sequence at the key's indentation,
    /// flow, block with text blocks and comments).
    fn deep_yaml(levels: usize, style: usize) -> String {
        match style % 4 {
            0 | 3 => {
                let mut out = String::from("workspaces:\n");
                for i in 0..levels {
                    let pad = " ".repeat(4 * i);
                    out.push_str(&format!("{pad}  - name: n{i} # node {i}\n"));
                    if style % 4 == 3 {
                        out.push_str(&format!("{pad}    model: |\n{pad}      [[[ {{ text: - x\n"));
                    }
                    out.push_str(&format!("{pad}    children:\n"));
                }
                out.push_str(&format!("{}  []\n", " ".repeat(4 * levels)));
                out
            }
            1 => {
                let mut out = String::from("workspaces:\n");
                for i in 0..levels {
                    let pad = " ".repeat(2 * i);
                    out.push_str(&format!("{pad}- name: 'n{i}'\n{pad}  children:\n"));
                }
                out.push_str(&format!("{}  []\n", " ".repeat(2 * levels)));
                out
            }
            _ => {
                let mut out = String::from("workspaces: [");
                for i in 0..levels {
                    out.push_str(&format!("\n{{name: \"n{i}\", children: ["));
                }
                out.push_str(&"]}".repeat(levels));
                out.push(']');
                out
            }
        }
    }

    #[test]
    fn deep_templates_answer_the_depth_rule_without_reaching_the_parser() {
        for levels in [200, 10_000] {
            for (format, body) in [
                (TemplateFormat::Json, deep_json(levels)),
                (TemplateFormat::Yaml, deep_yaml(levels, 0)),
                (TemplateFormat::Yaml, deep_yaml(levels, 2)),
            ] {
                assert!(
                    nesting_bound(&body, format) > MAX_NESTING,
                    "{levels} {format:?}"
                );
                assert_eq!(
                    OrgTemplate::parse(&body, format),
                    Err(TemplateError::NestedTooDeep),
                    "{levels} {format:?}"
                );
            }
        }
        // Just over the rule, the exact depth is named.
        assert_eq!(
            OrgTemplate::parse(&deep_json(17), TemplateFormat::Json),
            Err(TemplateError::TooDeep(17))
        );
        assert_eq!(
            OrgTemplate::parse(&deep_yaml(17, 0), TemplateFormat::Yaml),
            Err(TemplateError::TooDeep(17))
        );
        assert_eq!(
            TemplateError::NestedTooDeep.to_string(),
            "the template nests more than 16 levels deep; at most 16 are allowed"
        );
    }

    #[test]
    fn nul_and_bad_names_are_named_by_their_place() {
        let t = "{\"workspaces\":[{\"name\":\"a\",\"children\":[{\"name\":\"b\\u0000\"}]}]}";
        assert_eq!(
            OrgTemplate::parse(t, TemplateFormat::Json)
                .unwrap_err()
                .to_string(),
            "`workspaces[0].children[0].name` must not contain NUL characters (\\u0000)"
        );
        let t = "defaults: {runtime: \"x\\0\"}\nworkspaces: [{name: a}]\n";
        assert_eq!(
            OrgTemplate::parse(t, TemplateFormat::Yaml),
            Err(TemplateError::Nul("defaults.runtime".into()))
        );
        let t = "workspaces: [{name: a}, {name: '  '}]\n";
        assert_eq!(
            OrgTemplate::parse(t, TemplateFormat::Yaml),
            Err(TemplateError::Name(
                "workspaces[1].name: `name` must be 1 to 200 characters".into()
            ))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]

        /// Every layout at every depth gets the depth rule's answer (the
        /// exact one or "more than"), never a parser's error: the scan's
        /// bound is never under what the parser sees.
        #[test]
        fn any_depth_in_any_layout_answers_the_depth_rule(levels in 1usize..400, style in 0usize..5) {
            let (format, body) = if style == 4 {
                (TemplateFormat::Json, deep_json(levels))
            } else {
                (TemplateFormat::Yaml, deep_yaml(levels, style))
            };
            let got = OrgTemplate::parse(&body, format);
            if got == Err(TemplateError::NestedTooDeep) {
                proptest::prop_assert!(nesting_bound(&body, format) > MAX_NESTING, "the scan, not the parser");
            }
            if levels <= MAX_TEMPLATE_DEPTH {
                proptest::prop_assert!(got.is_ok(), "{levels}/{style}: {got:?}");
            } else {
                proptest::prop_assert!(
                    matches!(got, Err(TemplateError::TooDeep(n)) if n == levels)
                        || got == Err(TemplateError::NestedTooDeep),
                    "{levels}/{style}: {got:?}"
                );
            }
        }

        /// Arbitrary text (with brackets, indicators and indentation
        /// weighted in) never panics, and never gets past the parser with
        /// more than the allowed depth.
        #[test]
        fn arbitrary_text_never_panics(
            body in "([ \n\t]{0,6}(- |: |\\[|\\]|\\{|\\}|\"|'|#|\\||>|name|children|workspaces|,|x|\\\\)){0,200}",
            json in proptest::prelude::any::<bool>(),
        ) {
            let format = if json { TemplateFormat::Json } else { TemplateFormat::Yaml };
            if let Ok(t) = OrgTemplate::parse(&body, format) {
                proptest::prop_assert!(t.measure().1 <= MAX_TEMPLATE_DEPTH);
            }
        }

        /// One generated tree written as JSON and as block YAML parses to
        /// the same template, node for node (good input round-trips).
        #[test]
        fn a_tree_in_json_and_in_yaml_parses_to_the_same_template(t in tree()) {
            let json = serde_json::json!({"workspaces": [t.json()]}).to_string();
            let mut yaml = "workspaces:\n".to_owned();
            t.yaml(2, &mut yaml);
            let from_json = OrgTemplate::parse(&json, TemplateFormat::Json);
            let from_yaml = OrgTemplate::parse(&yaml, TemplateFormat::Yaml);
            proptest::prop_assert!(from_json.is_ok(), "{json}: {from_json:?}");
            proptest::prop_assert_eq!(&from_json, &from_yaml, "{}", yaml);
            let names: Vec<String> = from_json.unwrap().flatten().iter().map(|(f, _)| f.node.name.clone()).collect();
            proptest::prop_assert_eq!(names, t.names());
        }

        /// A valid template with one byte replaced, dropped or doubled
        /// anywhere: an answer, never a panic, and the fuzz target's
        /// oracle holds (the scan, not the parser, meets deep nesting).
        #[test]
        fn a_spoiled_template_is_answered_and_the_oracle_holds(
            t in tree(),
            at in proptest::prelude::any::<usize>(),
            byte in proptest::prelude::any::<u8>(),
            how in 0usize..3,
        ) {
            let mut yaml = "workspaces:\n".to_owned();
            t.yaml(2, &mut yaml);
            let json = serde_json::json!({"workspaces": [t.json()]}).to_string();
            for text in [yaml, json] {
                let mut bytes = text.into_bytes();
                let i = at % bytes.len();
                match how {
                    0 => bytes[i] = byte,
                    1 => { bytes.remove(i); }
                    _ => bytes.insert(i, bytes[i]),
                }
                let Ok(text) = String::from_utf8(bytes) else { continue };
                for format in [TemplateFormat::Json, TemplateFormat::Yaml] {
                    match OrgTemplate::parse(&text, format) {
                        Err(TemplateError::NestedTooDeep) => {
                            proptest::prop_assert!(nesting_bound(&text, format) > MAX_NESTING)
                        }
                        Err(TemplateError::Malformed(m)) => {
                            proptest::prop_assert!(!m.contains("recursion limit"), "{m}")
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// A generated template tree: a node's name and its children.
    #[derive(Debug, Clone)]
    struct Tree(String, Vec<Tree>);

    impl Tree {
        fn json(&self) -> serde_json::Value {
            let children: Vec<_> = self.1.iter().map(Tree::json).collect();
            serde_json::json!({"name": self.0, "children": children})
        }

        fn yaml(&self, indent: usize, out: &mut String) {
            let pad = " ".repeat(indent);
            out.push_str(&format!("{pad}- name: \"{}\"\n", self.0));
            if !self.1.is_empty() {
                out.push_str(&format!("{pad}  children:\n"));
                for c in &self.1 {
                    c.yaml(indent + 4, out);
                }
            }
        }

        /// Names in pre-order, as `flatten` lists them.
        fn names(&self) -> Vec<String> {
            let mut out = vec![self.0.clone()];
            for c in &self.1 {
                out.extend(c.names());
            }
            out
        }
    }

    fn tree() -> impl proptest::strategy::Strategy<Value = Tree> {
        use proptest::prelude::*;
        let name = "[a-zA-Z0-9äö日_.][a-zA-Z0-9äö日_. -]{0,20}[a-z]";
        name.prop_map(|n| Tree(n, Vec::new()))
            .prop_recursive(5, 40, 4, move |inner| {
                (name, prop::collection::vec(inner, 0..4)).prop_map(|(n, c)| Tree(n, c))
            })
    }
}
