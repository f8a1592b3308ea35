//! Usage and budgets, as pure types: what an agent reports it spent (tokens
//! of a model, perhaps a cost), the price table that turns tokens into cost
//! when the agent gives none, and the UTC day and month every total is
//! kept by. The store sums these per workspace, day and model; the HTTP
//! layer checks budgets against them.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::Value;

/// At most this many tokens in one report (either direction): a bound that
/// keeps every sum far inside `i64`.
pub const MAX_TOKENS: i64 = 1_000_000_000_000;

/// At most this cost in USD in one report.
pub const MAX_COST_USD: f64 = 1_000_000.0;

/// The longest model name kept (longer ones are refused).
pub const MAX_MODEL_CHARS: usize = 200;

/// The model label of usage that named none.
pub const UNKNOWN_MODEL: &str = "unknown";

/// The Prometheus label of a model the price table does not know.
pub const OTHER_MODEL: &str = "other";

/// Micro-dollars per dollar: costs are kept as integer millionths of a USD
/// so that sums are exact.
pub const MICROS_PER_USD: f64 = 1_000_000.0;

/// Micro-dollars per cent (budgets are in cents).
pub const MICROS_PER_CENT: i64 = 10_000;

/// One usage report, checked: `{input_tokens, output_tokens, model, cost_usd?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// Tokens sent to the model.
    pub input_tokens: i64,
    /// Tokens the model produced.
    pub output_tokens: i64,
    /// The model, as the agent named it ([`UNKNOWN_MODEL`] when it named none).
    pub model: String,
    /// What the agent says the call cost, in micro-USD, when it said.
    pub cost_micros: Option<i64>,
}

/// Why a usage report is refused; the sentence names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn tokens(v: &Value, field: &str) -> Result<i64, UsageError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(n) => n
            .as_i64()
            .filter(|n| (0..=MAX_TOKENS).contains(n))
            .ok_or_else(|| {
                UsageError(format!(
                    "`{field}` must be a whole number between 0 and {MAX_TOKENS}"
                ))
            }),
    }
}

impl Usage {
    /// Reads a `usage` object. Token counts default to 0; `prompt_tokens` /
    /// `completion_tokens` (the OpenAI names) are read when the Molecule
    /// names are absent.
    pub fn parse(v: &Value) -> Result<Self, UsageError> {
        if !v.is_object() {
            return Err(UsageError("`usage` must be an object".into()));
        }
        let pick = |ours: &str, theirs: &str| {
            if v.get(ours).is_some() {
                tokens(v, ours)
            } else {
                tokens(v, theirs)
            }
        };
        let input_tokens = pick("input_tokens", "prompt_tokens")?;
        let output_tokens = pick("output_tokens", "completion_tokens")?;
        let model = match v.get("model") {
            None | Some(Value::Null) => UNKNOWN_MODEL.to_owned(),
            Some(Value::String(m)) if !m.trim().is_empty() => {
                if m.chars().count() > MAX_MODEL_CHARS {
                    return Err(UsageError(format!(
                        "`model` must be at most {MAX_MODEL_CHARS} characters"
                    )));
                }
                m.trim().to_owned()
            }
            Some(_) => return Err(UsageError("`model` must be a non-empty string".into())),
        };
        let cost_micros = match v.get("cost_usd") {
            None | Some(Value::Null) => None,
            Some(c) => match c.as_f64() {
                Some(c) if c.is_finite() && (0.0..=MAX_COST_USD).contains(&c) => {
                    Some((c * MICROS_PER_USD).round() as i64)
                }
                _ => {
                    return Err(UsageError(format!(
                        "`cost_usd` must be a number between 0 and {MAX_COST_USD}"
                    )))
                }
            },
        };
        Ok(Usage {
            input_tokens,
            output_tokens,
            model,
            cost_micros,
        })
    }

    /// The `usage` object of a forwarded A2A (JSON-RPC) answer, where
    /// agents put it: `result.usage`, `result.metadata.usage`, or the top
    /// level. A malformed one is ignored (the answer is the agent's; its
    /// accounting is best effort).
    pub fn from_answer(answer: &Value) -> Option<Self> {
        let result = answer.get("result");
        [
            result.and_then(|r| r.get("usage")),
            result
                .and_then(|r| r.get("metadata"))
                .and_then(|m| m.get("usage")),
            answer.get("usage"),
        ]
        .into_iter()
        .flatten()
        .find_map(|u| Usage::parse(u).ok())
    }
}

/// The price of one model, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Price {
    /// USD per million input tokens.
    pub input: f64,
    /// USD per million output tokens.
    pub output: f64,
}

/// Prices by model name. A model matches the longest name that starts its
/// lower-cased form without its provider (`anthropic/claude-sonnet-4-5-2025…`
/// or `anthropic:claude-sonnet-4-5` → `claude-sonnet-4`).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

/// Built-in prices (USD per million tokens, list prices) of common models.
const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    ("claude-opus-4", 15.0, 75.0),
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("o3", 2.0, 8.0),
    ("o4-mini", 1.1, 4.4),
    ("gemini-2.5-pro", 1.25, 10.0),
    ("gemini-2.5-flash", 0.3, 2.5),
    ("deepseek-chat", 0.27, 1.1),
];

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable {
            prices: DEFAULT_PRICES
                .iter()
                .map(|&(m, input, output)| (m.to_owned(), Price { input, output }))
                .collect(),
        }
    }
}

impl PriceTable {
    /// The built-in table with `file`'s JSON (`{"model": {"input": USD per
    /// million, "output": USD per million}}`) laid over it.
    pub fn with_overrides(json: &str) -> Result<Self, UsageError> {
        let extra: BTreeMap<String, Price> = serde_json::from_str(json)
            .map_err(|e| UsageError(format!("the price table is not valid: {e}")))?;
        let mut table = PriceTable::default();
        for (model, price) in extra {
            let ok = |p: f64| p.is_finite() && (0.0..=1_000_000.0).contains(&p);
            if model.trim().is_empty() || !ok(price.input) || !ok(price.output) {
                return Err(UsageError(format!(
                    "the price of `{model}` must name a model and two prices between 0 and 1000000"
                )));
            }
            table.prices.insert(model.trim().to_lowercase(), price);
        }
        Ok(table)
    }

    /// The price table's name for `model`, or `None` when it has none.
    pub fn name_of(&self, model: &str) -> Option<&str> {
        let lower = model.to_lowercase();
        let bare = lower.rsplit(['/', ':']).next().unwrap_or(&lower);
        self.prices
            .keys()
            .filter(|name| bare.starts_with(name.as_str()))
            .max_by_key(|name| name.len())
            .map(String::as_str)
    }

    /// The bounded label of `model` for metrics: its price-table name, or
    /// [`OTHER_MODEL`].
    pub fn label(&self, model: &str) -> String {
        self.name_of(model).unwrap_or(OTHER_MODEL).to_owned()
    }

    /// The cost of `usage` in micro-USD: the agent's own figure, else the
    /// tokens at the model's price, else 0 (an unknown model costs what
    /// the agent says, which is nothing).
    pub fn cost_micros(&self, usage: &Usage) -> i64 {
        if let Some(c) = usage.cost_micros {
            return c;
        }
        let Some(price) = self.name_of(&usage.model).and_then(|n| self.prices.get(n)) else {
            return 0;
        };
        let usd = usage.input_tokens as f64 * price.input / 1e6
            + usage.output_tokens as f64 * price.output / 1e6;
        (usd * MICROS_PER_USD).round() as i64
    }
}

/// The UTC day of `t` as `YYYY-MM-DD` (how usage rows are keyed).
pub fn day_of(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The first day of `t`'s UTC month and the first day of the next, both
/// as `YYYY-MM-DD`: the month is `first <= day < next`.
pub fn month_bounds(t: DateTime<Utc>) -> (String, String) {
    let d = t.date_naive();
    let first = NaiveDate::from_ymd_opt(d.year(), d.month(), 1).expect("BUG: day 1 exists");
    let next = if d.month() == 12 {
        NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)
    }
    .expect("BUG: day 1 exists");
    (first.to_string(), next.to_string())
}

/// The UTC month of `t` as `YYYY-MM`.
pub fn month_of(t: DateTime<Utc>) -> String {
    t.format("%Y-%m").to_string()
}

/// A query's day bound: `YYYY-MM-DD`, checked.
pub fn parse_day(raw: &str) -> Result<String, UsageError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(|d| d.to_string())
        .map_err(|_| UsageError(format!("`{raw}` is not a day (YYYY-MM-DD)")))
}

/// Micro-USD as whole cents, rounded up: a budget is never under-counted.
pub fn micros_to_cents(micros: i64) -> i64 {
    (micros + MICROS_PER_CENT - 1).div_euclid(MICROS_PER_CENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_reads_both_names_and_refuses_bad_fields() {
        let u = Usage::parse(&json!({"prompt_tokens": 10, "completion_tokens": 5})).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (10, 5));
        assert_eq!(u.model, UNKNOWN_MODEL);
        assert!(Usage::parse(&json!({"input_tokens": -1})).is_err());
        assert!(Usage::parse(&json!({"input_tokens": 1.5})).is_err());
        assert!(Usage::parse(&json!({"cost_usd": -0.1})).is_err());
        assert!(Usage::parse(&json!({"model": 3})).is_err());
        assert!(Usage::parse(&json!([])).is_err());
        let c = Usage::parse(&json!({"cost_usd": 0.25, "model": "x"})).unwrap();
        assert_eq!(c.cost_micros, Some(250_000));
    }

    #[test]
    fn prices_match_the_longest_name_and_strip_the_provider() {
        let t = PriceTable::default();
        assert_eq!(
            t.name_of("anthropic/Claude-Opus-4-5-20251101"),
            Some("claude-opus-4-5")
        );
        assert_eq!(t.name_of("gpt-4o-mini-2024-07-18"), Some("gpt-4o-mini"));
        assert_eq!(
            t.name_of("anthropic:claude-sonnet-4-5"),
            Some("claude-sonnet-4")
        );
        assert_eq!(t.label("llama-3"), OTHER_MODEL);
        let u = Usage::parse(
            &json!({"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 100_000}),
        )
        .unwrap();
        assert_eq!(t.cost_micros(&u), 3_500_000);
        let t = PriceTable::with_overrides(r#"{"llama-3": {"input": 1, "output": 2}}"#).unwrap();
        assert_eq!(t.label("llama-3-70b"), "llama-3");
        assert!(PriceTable::with_overrides(r#"{"x": {"input": -1, "output": 2}}"#).is_err());
    }

    #[test]
    fn month_bounds_roll_over_the_year() {
        let t = "2026-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(month_bounds(t), ("2026-12-01".into(), "2027-01-01".into()));
        assert_eq!(micros_to_cents(1), 1);
        assert_eq!(micros_to_cents(20_000), 2);
    }
}
