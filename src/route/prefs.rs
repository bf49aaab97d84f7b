//! Router-only request fields that narrow or reorder the candidates, as OpenRouter and
//! the Open-LLM Router accept them: `allowed_models` (globs) and `provider`
//! (`only`, `ignore`, `order`, `sort`, `allow_fallbacks`). Both are removed before the
//! request is forwarded.

use serde_json::{Map, Value};

use crate::config::plan::Target;
use crate::config::raw::Strategy;
use crate::errors::ApiError;
use crate::glob::Glob;

/// Bounds on what a client may send in these fields, so one request cannot make routing slow.
const MAX_LIST: usize = 64;
const MAX_ITEM_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Price,
    Latency,
    Throughput,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientPrefs {
    pub allowed_models: Vec<Glob>,
    /// Lower-cased upstream names.
    pub only: Option<Vec<String>>,
    pub ignore: Vec<String>,
    pub order: Vec<String>,
    pub sort: Option<Sort>,
    pub allow_fallbacks: bool,
    /// `provider.require_parameters`: only targets that declare every capability the
    /// request uses.
    pub require_parameters: bool,
}

impl Default for ClientPrefs {
    fn default() -> Self {
        ClientPrefs {
            allowed_models: Vec::new(),
            only: None,
            ignore: Vec::new(),
            order: Vec::new(),
            sort: None,
            allow_fallbacks: true,
            require_parameters: false,
        }
    }
}

/// The top-level body members the router consumes and strips.
pub const ROUTER_FIELDS: [&str; 2] = ["allowed_models", "provider"];

impl ClientPrefs {
    pub fn from_body(body: &Map<String, Value>) -> Result<ClientPrefs, ApiError> {
        let mut prefs = ClientPrefs::default();
        match body.get("allowed_models") {
            None | Some(Value::Null) => {}
            Some(v) => {
                prefs.allowed_models = string_list(v, "allowed_models")?
                    .into_iter()
                    .map(|s| Glob::new(&s))
                    .collect();
            }
        }
        let provider = match body.get("provider") {
            None | Some(Value::Null) => return Ok(prefs),
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "`provider` must be an object.",
                    Some("provider"),
                    "invalid_type",
                ))
            }
        };
        // Other OpenRouter provider fields (data_collection, quantizations, ...) are accepted
        // and ignored: they have no meaning for a self-hosted router. `require_parameters`
        // keeps the targets whose `capabilities` declare what the request uses.
        if let Some(v) = provider.get("only").filter(|v| !v.is_null()) {
            prefs.only = Some(lower(string_list(v, "provider.only")?));
        }
        if let Some(v) = provider.get("ignore").filter(|v| !v.is_null()) {
            prefs.ignore = lower(string_list(v, "provider.ignore")?);
        }
        if let Some(v) = provider.get("order").filter(|v| !v.is_null()) {
            prefs.order = lower(string_list(v, "provider.order")?);
        }
        match provider.get("sort") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                prefs.sort = Some(match s.as_str() {
                    "price" => Sort::Price,
                    "latency" => Sort::Latency,
                    "throughput" => Sort::Throughput,
                    _ => return Err(ApiError::invalid_request(
                        "`provider.sort` must be one of \"price\", \"latency\", \"throughput\".",
                        Some("provider.sort"),
                        "invalid_value",
                    )),
                })
            }
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "`provider.sort` must be a string.",
                    Some("provider.sort"),
                    "invalid_type",
                ))
            }
        }
        prefs.allow_fallbacks = flag(provider, "provider.allow_fallbacks", true)?;
        prefs.require_parameters = flag(provider, "provider.require_parameters", false)?;
        Ok(prefs)
    }

    /// Why this target is ruled out by the client's preferences, if it is.
    pub fn excludes(&self, upstream: &str, model: &str) -> Option<String> {
        if !self.allowed_models.is_empty() {
            let qualified = format!("{upstream}/{model}");
            let allowed = self
                .allowed_models
                .iter()
                .any(|g| g.matches(model) || g.matches(&qualified));
            if !allowed {
                return Some("excluded by allowed_models".to_owned());
            }
        }
        let name = upstream.to_ascii_lowercase();
        if let Some(only) = &self.only {
            if !only.contains(&name) {
                return Some("excluded by provider.only".to_owned());
            }
        }
        if self.ignore.contains(&name) {
            return Some("excluded by provider.ignore".to_owned());
        }
        None
    }

    pub fn strategy_override(&self) -> Option<Strategy> {
        self.sort.map(|s| match s {
            Sort::Price => Strategy::Cheapest,
            Sort::Latency => Strategy::LowestLatency,
            Sort::Throughput => Strategy::LeastBusy,
        })
    }

    /// `provider.order`: the named upstreams first, in that order, then (when fallbacks are
    /// allowed) the rest in their configured order.
    pub fn apply_order<'t, 'n>(
        &self,
        pool: &[&'t Target],
        name_of: impl Fn(&Target) -> &'n str,
    ) -> Vec<&'t Target> {
        let mut out: Vec<&'t Target> = Vec::with_capacity(pool.len());
        for wanted in &self.order {
            for t in pool {
                if name_of(t).eq_ignore_ascii_case(wanted)
                    && !out.iter().any(|o| std::ptr::eq(*o, *t))
                {
                    out.push(t);
                }
            }
        }
        if self.allow_fallbacks || out.is_empty() {
            for t in pool {
                if !out.iter().any(|o| std::ptr::eq(*o, *t)) {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// The boolean `provider` member `param` names (`default` when absent or null).
fn flag(
    provider: &Map<String, Value>,
    param: &'static str,
    default: bool,
) -> Result<bool, ApiError> {
    let name = param.strip_prefix("provider.").unwrap_or(param);
    match provider.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid_request(
            format!("`{param}` must be a boolean."),
            Some(param),
            "invalid_type",
        )),
    }
}

fn string_list(v: &Value, param: &'static str) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::invalid_request(
            format!("`{param}` must be an array of at most {MAX_LIST} non-empty strings of at most {MAX_ITEM_LEN} bytes."),
            Some(param),
            "invalid_type",
        )
    };
    let Value::Array(items) = v else {
        return Err(bad());
    };
    if items.len() > MAX_LIST {
        return Err(bad());
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_ITEM_LEN => Ok(s.clone()),
            _ => Err(bad()),
        })
        .collect()
}

fn lower(v: Vec<String>) -> Vec<String> {
    v.into_iter().map(|s| s.to_ascii_lowercase()).collect()
}
