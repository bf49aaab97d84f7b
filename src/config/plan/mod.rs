//! The compiled configuration: validated once in `on_configure`, then only read by requests.
//! Names are resolved to indices, globs parsed, regexes built, keys read from the environment.
//!
//! This file holds the compiled types ([`Plan`] and what it is made of); the compiling is
//! split by section so that each part can be read alone:
//!
//! * `assemble.rs`: [`compile`] and [`compile_raw`], which put a [`Plan`] together, and the
//!   checks across sections (failover, one price and budget per target).
//! * `upstream.rs`: an upstream (cluster, host, path prefix, key, extra headers).
//! * `health.rs`: the `health` section.
//! * `action.rs`: an action (a model alias, a rule's or the default's targets).
//! * `matcher.rs`: a rule's `match`.
//! * `names.rs`: the checks of names, header names and values, and glob lists.

use std::collections::HashMap;
use std::fmt;

use regex::Regex;

use super::capabilities::Capabilities;
use super::raw::{Profile, RawUsage, Strategy, UnknownModel, WhenAllUnhealthy};
use crate::classify::{ClassifierPlan, Complexity, Task};
use crate::clients::ClientsPlan;
use crate::endpoint::Endpoint;
use crate::glob::Glob;
use crate::health::{Budget, HealthPolicy};
use crate::models::ModelsCatalog;
use crate::ratelimit::ServicePlan;

mod action;
mod assemble;
mod health;
mod matcher;
mod names;
mod upstream;

pub use assemble::{compile, compile_raw};
pub use names::is_header_value_safe;
pub(crate) use names::{check_header_name, glob_list};

#[derive(Debug)]
pub struct Plan {
    pub upstreams: Vec<Upstream>,
    /// Public model names (aliases) and where they go.
    pub aliases: HashMap<String, Action>,
    pub rules: Vec<Rule>,
    pub default: Option<Action>,
    pub unknown_model: UnknownModel,
    pub passthrough_upstream: Option<usize>,
    pub classifier: ClassifierPlan,
    pub max_body_bytes: usize,
    pub cluster_header: String,
    pub response_headers: bool,
    pub health: HealthPlan,
    pub failover: Option<FailoverPlan>,
    /// Every configured target by its health-board key: what the upstream filter needs to
    /// rewrite an attempt for a target named in the failover header.
    pub targets: HashMap<String, TargetRef>,
    /// Every header name some upstream adds (`upstreams.*.headers`): an attempt removes
    /// those of the upstream tried before.
    pub upstream_header_names: Vec<String>,
    pub usage: RawUsage,
    /// What `GET /v1/models` answers; `None` when `models_endpoint` is off.
    pub models: Option<ModelsCatalog>,
    pub access_log: bool,
    /// Client keys and limits; `None`: no client authentication.
    pub clients: Option<ClientsPlan>,
    /// Where client limits and target budgets are counted when not in this Envoy's shared
    /// data (the targets' budgets are then there, not on the health board).
    pub rate_limit_service: Option<ServicePlan>,
}

/// `failover`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPlan {
    pub cluster: String,
    pub max_attempts: u32,
}

/// A configured target, found by key.
#[derive(Debug, Clone)]
pub struct TargetRef {
    pub upstream: usize,
    pub model: String,
    pub budget: Budget,
    pub price: Option<Price>,
    pub caps: Capabilities,
    /// Listed by an action that routes on load or latency (`least_busy`, `lowest_latency`):
    /// every worker must see its requests end at once (no finish waits, `health::deferred`).
    pub load_aware: bool,
}

/// The compiled `health` section.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPlan {
    /// Track health in shared data and skip unhealthy targets.
    pub enabled: bool,
    pub policy: HealthPolicy,
    pub when_all_unhealthy: WhenAllUnhealthy,
}

impl Default for HealthPlan {
    fn default() -> HealthPlan {
        HealthPlan {
            enabled: true,
            policy: HealthPolicy::default(),
            when_all_unhealthy: WhenAllUnhealthy::Soonest,
        }
    }
}

pub struct Upstream {
    pub name: String,
    pub cluster: String,
    pub authority: Option<String>,
    /// Without a trailing slash; replaces the request path's leading `/v1`.
    pub path_prefix: String,
    pub auth: Option<Auth>,
    /// Set when the upstream wants a key but its environment variable is unset or empty:
    /// the upstream is then skipped, with this variable named in the reason.
    pub missing_key_env: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The API it speaks, when configured (`None`: whatever the client speaks).
    pub format: Option<crate::translate::Format>,
    /// The output limit of a request translated to Anthropic's API that set none.
    pub default_max_tokens: u64,
}

/// The credential header for an upstream. The value is a secret: `Debug` never prints it.
pub struct Auth {
    pub header: &'static str,
    pub value: String,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("path_prefix", &self.path_prefix)
            .field("auth", &self.auth.as_ref().map(|a| a.header))
            .field("missing_key_env", &self.missing_key_env)
            .field("headers", &self.headers)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Per one million input tokens.
    pub input: f64,
    /// Per one million output tokens.
    pub output: f64,
    /// Per one million input tokens read from the provider's cache.
    pub cached_input: f64,
}

impl Price {
    /// What a request cost in millionths of the price's currency unit (prices are per one
    /// million tokens, i.e. millionths per token): cached prompt tokens at `cached_input`,
    /// the other prompt tokens at `input`, completion tokens at `output`.
    pub fn micro_cost(&self, prompt: u64, cached: u64, completion: u64) -> f64 {
        let cached = cached.min(prompt);
        (prompt - cached) as f64 * self.input
            + cached as f64 * self.cached_input
            + completion as f64 * self.output
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub upstream: usize,
    pub model: String,
    pub weight: u32,
    pub price: Option<Price>,
    /// Requests / tokens per minute; unlimited by default.
    pub budget: Budget,
    /// The target's key on the health board (`HealthBoard::key`).
    pub key: String,
    /// What it can serve (its own fields over its model's `capabilities`).
    pub caps: Capabilities,
}

#[derive(Debug, Clone)]
pub struct Action {
    /// Stable name used in diagnostics and as the round-robin counter key.
    pub name: String,
    pub targets: Vec<Target>,
    pub strategy: Strategy,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub matcher: Matcher,
    pub action: Action,
}

#[derive(Debug, Default)]
pub struct Matcher {
    /// `None`: the rule applies only to `auto` / omitted-model requests.
    pub models: Option<ModelMatch>,
    pub tasks: Option<Vec<Task>>,
    pub complexities: Option<Vec<Complexity>>,
    pub tags: Option<Vec<String>>,
    pub endpoints: Option<Vec<Endpoint>>,
    pub headers: Vec<HeaderMatcher>,
    pub stream: Option<bool>,
    pub tools: Option<bool>,
    pub images: Option<bool>,
    pub min_prompt_tokens: Option<u64>,
    pub max_prompt_tokens: Option<u64>,
    /// Client names (`clients.keys[].name`); an anonymous request matches none.
    pub clients: Option<Vec<Glob>>,
    pub profiles: Option<Vec<Profile>>,
}

#[derive(Debug, Default)]
pub struct ModelMatch {
    pub auto: bool,
    pub globs: Vec<Glob>,
}

#[derive(Debug)]
pub struct HeaderMatcher {
    /// Lower case.
    pub name: String,
    pub test: HeaderTest,
}

#[derive(Debug)]
pub enum HeaderTest {
    Exact(String),
    Regex(Regex),
    Present(bool),
}

impl Plan {
    pub fn upstream(&self, index: usize) -> Option<&Upstream> {
        self.upstreams.get(index)
    }
}
