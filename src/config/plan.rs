//! The compiled configuration: validated once in `on_configure`, then only read by requests.
//! Names are resolved to indices, globs parsed, regexes built, keys read from the environment.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use regex::Regex;

use super::capabilities::{self, Capabilities};
use super::error::ConfigError;
use super::raw::{
    AuthKind, Profile, RawAction, RawConfig, RawFailover, RawHeaderMatch, RawHealth, RawMatch,
    RawTarget, RawUpstream, RawUsage, Strategy, UnknownModel, WhenAllUnhealthy,
};
use crate::classify::{ClassifierPlan, Complexity, Task};
use crate::clients::ClientsPlan;
use crate::endpoint::Endpoint;
use crate::glob::Glob;
use crate::health::{Budget, HealthBoard, HealthPolicy};
use crate::models::ModelsCatalog;

/// Compiled regexes are capped so that a hostile or careless config cannot exhaust VM memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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

/// Parses and validates the plugin configuration. `env` reads an environment variable
/// (in Envoy: those listed in `vm_config.environment_variables`).
pub fn compile(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, ConfigError> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ConfigError::new(field, e.into_inner().to_string())
    })?;
    // Only whitespace may follow the object: a second document would otherwise be ignored.
    de.end().map_err(|e| ConfigError::new("", e.to_string()))?;
    compile_raw(&raw, env)
}

pub fn compile_raw(
    raw: &RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, ConfigError> {
    if raw.upstreams.is_empty() {
        return Err(ConfigError::new(
            "upstreams",
            "at least one upstream is required",
        ));
    }
    let health = compile_health(&raw.health)?;
    let mut upstreams = Vec::with_capacity(raw.upstreams.len());
    let mut upstream_index = HashMap::new();
    for (name, up) in &raw.upstreams {
        let field = format!("upstreams.{name}");
        upstream_index.insert(name.clone(), upstreams.len());
        upstreams.push(compile_upstream(name, up, &field, env)?);
    }

    let classifier = ClassifierPlan::compile(&raw.classifier, "classifier")?;
    let tag_names: Vec<&str> = classifier.tag_names().collect();

    let mut aliases = HashMap::with_capacity(raw.models.len());
    for (alias, action) in &raw.models {
        let field = format!("models.{alias}");
        check_name(alias, &field)?;
        if alias == "auto" {
            return Err(ConfigError::new(
                field,
                "`auto` is reserved: it asks the router to choose",
            ));
        }
        if action.use_model.is_some() {
            return Err(ConfigError::new(
                format!("{field}.use_model"),
                "a model alias lists its own targets; use_model is for rules and default",
            ));
        }
        let compiled = compile_action(
            action,
            alias,
            &field,
            &upstream_index,
            &BTreeMap::new(),
            &upstreams,
        )?;
        aliases.insert(alias.clone(), compiled);
    }
    let raw_aliases: BTreeMap<&str, &RawAction> =
        raw.models.iter().map(|(k, v)| (k.as_str(), v)).collect();

    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, rule) in raw.rules.iter().enumerate() {
        let field = format!("rules[{i}]");
        check_name(&rule.name, &format!("{field}.name"))?;
        if raw.rules[..i].iter().any(|r| r.name == rule.name) {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("duplicate rule name `{}`", rule.name),
            ));
        }
        let matcher = compile_match(
            &rule.matcher,
            &format!("{field}.match"),
            &tag_names,
            raw.clients.is_some(),
        )?;
        let action = compile_action(
            &rule.action(),
            &format!("rule:{}", rule.name),
            &field,
            &upstream_index,
            &raw_aliases,
            &upstreams,
        )?;
        rules.push(Rule {
            name: rule.name.clone(),
            matcher,
            action,
        });
    }

    let mut default = match &raw.default {
        Some(action) => Some(compile_action(
            action,
            "default",
            "default",
            &upstream_index,
            &raw_aliases,
            &upstreams,
        )?),
        None => None,
    };
    capabilities::resolve(
        &raw.capabilities,
        &mut aliases,
        &mut rules,
        default.as_mut(),
    )?;

    let passthrough_upstream = match (&raw.passthrough_upstream, raw.unknown_model) {
        (Some(name), _) => Some(*upstream_index.get(name).ok_or_else(|| {
            ConfigError::new("passthrough_upstream", format!("unknown upstream `{name}`"))
        })?),
        (None, UnknownModel::Passthrough) => {
            return Err(ConfigError::new(
                "passthrough_upstream",
                "required when unknown_model is `passthrough`",
            ))
        }
        (None, UnknownModel::Reject) => None,
    };

    if raw.max_body_bytes < 1024 || raw.max_body_bytes > 256 * 1024 * 1024 {
        return Err(ConfigError::new(
            "max_body_bytes",
            "must be between 1024 and 268435456",
        ));
    }
    let cluster_header = raw.cluster_header.to_ascii_lowercase();
    check_header_name(&cluster_header, "cluster_header")?;
    // The router sets or removes these itself; sharing a name would lose the cluster.
    let reserved = matches!(
        cluster_header.as_str(),
        "authorization" | "x-api-key" | "api-key" | "content-length" | "host" | "content-type"
    ) || cluster_header.starts_with(':')
        || upstreams
            .iter()
            .any(|u| u.headers.iter().any(|(n, _)| *n == cluster_header));
    if reserved {
        return Err(ConfigError::new(
            "cluster_header",
            format!("{cluster_header:?} is a header the router already sets or removes; choose a name of its own"),
        ));
    }

    let failover = compile_failover(&raw.failover, &upstreams)?;
    let clients = match &raw.clients {
        Some(c) => Some(ClientsPlan::compile(c, "clients")?),
        None => None,
    };
    if let Some(h) = clients.as_ref().and_then(|c| c.identity_header.as_deref()) {
        if h == cluster_header
            || upstreams
                .iter()
                .any(|u| u.headers.iter().any(|(n, _)| n == h))
        {
            return Err(ConfigError::new(
                "clients.identity_header",
                format!("{h:?} is a header the router sets for upstreams; choose another"),
            ));
        }
    }
    // In configuration order, so that an error names the same place every time.
    let actions = raw
        .models
        .keys()
        .filter_map(|alias| Some((format!("models.{alias}"), aliases.get(alias)?)))
        .chain(
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("rules[{i}]"), &r.action)),
        )
        .chain(default.iter().map(|d| ("default".to_owned(), d)));
    let targets = target_refs(actions)?;
    let mut upstream_header_names: Vec<String> = upstreams
        .iter()
        .flat_map(|u| u.headers.iter().map(|(n, _)| n.clone()))
        .collect();
    upstream_header_names.sort();
    upstream_header_names.dedup();

    let mut plan = Plan {
        failover,
        targets,
        upstream_header_names,
        upstreams,
        aliases,
        rules,
        default,
        unknown_model: raw.unknown_model,
        passthrough_upstream,
        classifier,
        max_body_bytes: raw.max_body_bytes,
        cluster_header,
        response_headers: raw.response_headers,
        health,
        usage: raw.usage,
        models: None,
        access_log: raw.access_log,
        clients,
    };
    if raw.models_endpoint {
        plan.models = Some(ModelsCatalog::from_plan(&plan));
    }
    Ok(plan)
}

/// Every configured target by key, with the price and budget it is given wherever it is
/// listed (a target has one of each: cost and budgets are kept per target, not per action).
fn target_refs<'a>(
    actions: impl Iterator<Item = (String, &'a Action)>,
) -> Result<HashMap<String, TargetRef>, ConfigError> {
    let mut targets: HashMap<String, (TargetRef, String)> = HashMap::new();
    for (field, action) in actions {
        for (j, t) in action.targets.iter().enumerate() {
            let here = format!("{field}.targets[{j}]");
            let load_aware = matches!(
                action.strategy,
                Strategy::LeastBusy | Strategy::LowestLatency
            );
            let Some((known, at)) = targets.get_mut(&t.key) else {
                let r = TargetRef {
                    upstream: t.upstream,
                    model: t.model.clone(),
                    budget: t.budget,
                    price: t.price,
                    caps: t.caps,
                    load_aware,
                };
                targets.insert(t.key.clone(), (r, here));
                continue;
            };
            known.load_aware |= load_aware;
            let conflict = |what: &str| {
                ConfigError::new(
                    format!("{here}.{what}"),
                    format!("differs from the {what} of the same target at {at}; give a target one {what}"),
                )
            };
            match (known.price, t.price) {
                (Some(a), Some(b)) if a != b => return Err(conflict("price")),
                (None, Some(b)) => known.price = Some(b),
                _ => {}
            }
            let unset = Budget::default();
            match (known.budget, t.budget) {
                (a, b) if a != unset && b != unset && a != b => return Err(conflict("budget")),
                (a, b) if a == unset => known.budget = b,
                _ => {}
            }
        }
    }
    Ok(targets.into_iter().map(|(k, (r, _))| (k, r)).collect())
}

fn compile_failover(
    raw: &RawFailover,
    upstreams: &[Upstream],
) -> Result<Option<FailoverPlan>, ConfigError> {
    let Some(cluster) = &raw.cluster else {
        if raw.max_attempts.is_some() {
            return Err(ConfigError::new(
                "failover.cluster",
                "required with failover.max_attempts: name the Envoy cluster that retries",
            ));
        }
        return Ok(None);
    };
    if cluster.is_empty() || !is_header_value_safe(cluster) {
        return Err(ConfigError::new(
            "failover.cluster",
            "must be a non-empty Envoy cluster name without control characters",
        ));
    }
    if let Some(up) = upstreams.iter().find(|u| u.cluster == *cluster) {
        return Err(ConfigError::new(
            "failover.cluster",
            format!(
                "`{cluster}` is the cluster of upstream `{}`; failover needs a cluster of its own",
                up.name
            ),
        ));
    }
    let max_attempts = raw.max_attempts.unwrap_or(3);
    if !(2..=10).contains(&max_attempts) {
        return Err(ConfigError::new(
            "failover.max_attempts",
            "must be between 2 and 10 (leave failover.cluster out to turn failover off)",
        ));
    }
    Ok(Some(FailoverPlan {
        cluster: cluster.clone(),
        max_attempts,
    }))
}

const DAY_SECONDS: f64 = 86_400.0;

/// Seconds (finite, within `min ..= max`) to whole milliseconds; `min_exclusive` refuses `min`.
fn seconds_ms(
    value: f64,
    field: &str,
    min: f64,
    min_exclusive: bool,
    max: f64,
) -> Result<u64, ConfigError> {
    let low_ok = if min_exclusive {
        value > min
    } else {
        value >= min
    };
    if !(value.is_finite() && low_ok && value <= max) {
        let low = if min_exclusive {
            format!("greater than {min}")
        } else {
            format!("at least {min}")
        };
        return Err(ConfigError::new(
            field,
            format!("must be a number of seconds {low} and at most {max}"),
        ));
    }
    // In range 0 ..= 86400000 after the check, so the cast is exact.
    Ok((value * 1000.0).round() as u64)
}

fn compile_health(raw: &RawHealth) -> Result<HealthPlan, ConfigError> {
    let mut policy = HealthPolicy::default();
    if let Some(n) = raw.allowed_fails {
        if n > 1_000_000 {
            return Err(ConfigError::new(
                "health.allowed_fails",
                "must be at most 1000000",
            ));
        }
        policy.allowed_fails = n;
    }
    if let Some(s) = raw.cooldown_seconds {
        policy.cooldown_ms = seconds_ms(s, "health.cooldown_seconds", 0.0, false, DAY_SECONDS)?;
    }
    match raw.failure_rate {
        None => {}
        Some(None) => policy.failure_rate_threshold = None,
        Some(Some(fr)) => {
            if !(fr.threshold.is_finite() && fr.threshold > 0.0 && fr.threshold <= 1.0) {
                return Err(ConfigError::new(
                    "health.failure_rate.threshold",
                    "must be a fraction greater than 0 and at most 1",
                ));
            }
            policy.failure_rate_threshold = Some(fr.threshold);
            if let Some(w) = fr.window_seconds {
                policy.failure_window_ms =
                    seconds_ms(w, "health.failure_rate.window_seconds", 1.0, false, 3600.0)?;
            }
            if let Some(n) = fr.min_requests {
                if n == 0 {
                    return Err(ConfigError::new(
                        "health.failure_rate.min_requests",
                        "must be at least 1",
                    ));
                }
                policy.min_requests = n;
            }
        }
    }
    if let Some(s) = raw.probe_timeout_seconds {
        policy.probe_timeout_ms =
            seconds_ms(s, "health.probe_timeout_seconds", 0.0, true, DAY_SECONDS)?.max(1);
    }
    if let Some(s) = raw.max_retry_after_seconds {
        policy.max_rate_limit_cooldown_ms =
            seconds_ms(s, "health.max_retry_after_seconds", 0.0, true, DAY_SECONDS)?.max(1);
    }
    // The policy's own range checks, as a backstop (their names are internal ones).
    policy.validate("health")?;
    Ok(HealthPlan {
        enabled: raw.enabled.unwrap_or(true),
        policy,
        when_all_unhealthy: raw.when_all_unhealthy,
    })
}

fn compile_upstream(
    name: &str,
    up: &RawUpstream,
    field: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Upstream, ConfigError> {
    check_name(name, field)?;
    let cluster = up.cluster.clone().unwrap_or_else(|| name.to_owned());
    if cluster.is_empty() || !cluster.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            format!("{field}.cluster"),
            "must be a non-empty Envoy cluster name without spaces or control characters",
        ));
    }
    if let Some(host) = &up.host {
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
        if !ok {
            return Err(ConfigError::new(
                format!("{field}.host"),
                "must be a host name, optionally with :port",
            ));
        }
    }
    let prefix = up.path_prefix.trim_end_matches('/');
    if !up.path_prefix.starts_with('/')
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        return Err(ConfigError::new(
            format!("{field}.path_prefix"),
            "must start with `/` and contain no spaces, `?` or `#`",
        ));
    }
    let mut auth = None;
    let mut missing_key_env = None;
    if let Some(raw_auth) = &up.auth {
        let var = &raw_auth.key_env;
        if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::new(
                format!("{field}.auth.key_env"),
                "must be an environment variable name ([A-Za-z0-9_]+)",
            ));
        }
        match env(var).filter(|k| !k.trim().is_empty()) {
            Some(key) => {
                let key = key.trim();
                if !is_header_value_safe(key) {
                    // Never echo the key itself.
                    return Err(ConfigError::new(
                        format!("{field}.auth.key_env"),
                        format!("the value of {var} contains characters not allowed in a header"),
                    ));
                }
                let (header, value) = match raw_auth.kind {
                    AuthKind::Bearer => ("authorization", format!("Bearer {key}")),
                    AuthKind::XApiKey => ("x-api-key", key.to_owned()),
                    AuthKind::ApiKey => ("api-key", key.to_owned()),
                };
                auth = Some(Auth { header, value });
            }
            None => missing_key_env = Some(var.clone()),
        }
    }
    let mut headers = Vec::with_capacity(up.headers.len());
    for (hname, hvalue) in &up.headers {
        let hfield = format!("{field}.headers.{hname}");
        let lower = hname.to_ascii_lowercase();
        check_header_name(&lower, &hfield)?;
        if headers.iter().any(|(n, _)| *n == lower) {
            return Err(ConfigError::new(
                hfield,
                "duplicate header (names are case-insensitive)",
            ));
        }
        if matches!(
            lower.as_str(),
            "content-length" | "host" | "transfer-encoding" | "connection"
        ) {
            return Err(ConfigError::new(
                hfield,
                "this header is managed by the router or Envoy",
            ));
        }
        if !is_header_value_safe(hvalue) {
            return Err(ConfigError::new(
                hfield,
                "value contains control characters",
            ));
        }
        headers.push((lower, hvalue.clone()));
    }
    Ok(Upstream {
        name: name.to_owned(),
        cluster,
        authority: up.host.clone(),
        path_prefix: prefix.to_owned(),
        auth,
        missing_key_env,
        headers,
    })
}

fn compile_action(
    action: &RawAction,
    name: &str,
    field: &str,
    upstreams: &HashMap<String, usize>,
    aliases: &BTreeMap<&str, &RawAction>,
    compiled_upstreams: &[Upstream],
) -> Result<Action, ConfigError> {
    let (targets, strategy, targets_field): (&[RawTarget], Strategy, String) =
        match (&action.use_model, action.targets.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::new(
                    format!("{field}.use_model"),
                    "give either targets or use_model, not both",
                ))
            }
            (Some(alias), true) => {
                let aliased = aliases.get(alias.as_str()).ok_or_else(|| {
                    ConfigError::new(
                        format!("{field}.use_model"),
                        format!("unknown model alias `{alias}` (not in `models`)"),
                    )
                })?;
                (
                    &aliased.targets,
                    action.strategy.or(aliased.strategy).unwrap_or_default(),
                    format!("models.{alias}.targets"),
                )
            }
            (None, true) => {
                return Err(ConfigError::new(
                    format!("{field}.targets"),
                    "at least one target (or use_model) is required",
                ))
            }
            (None, false) => (
                &action.targets,
                action.strategy.unwrap_or_default(),
                format!("{field}.targets"),
            ),
        };
    let mut compiled = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let tfield = format!("{targets_field}[{i}]");
        let upstream = *upstreams.get(&t.upstream).ok_or_else(|| {
            ConfigError::new(
                format!("{tfield}.upstream"),
                format!("unknown upstream `{}`", t.upstream),
            )
        })?;
        if t.model.is_empty() || !is_header_value_safe(&t.model) {
            return Err(ConfigError::new(
                format!("{tfield}.model"),
                "must be a non-empty model id without control characters",
            ));
        }
        let price = match t.price {
            Some(p) => {
                let valid = |x: f64| x.is_finite() && x >= 0.0;
                if !(valid(p.input) && valid(p.output)) {
                    return Err(ConfigError::new(
                        format!("{tfield}.price"),
                        "input and output must be finite, non-negative numbers",
                    ));
                }
                if !p.cached_input.is_none_or(valid) {
                    return Err(ConfigError::new(
                        format!("{tfield}.price.cached_input"),
                        "must be a finite, non-negative number",
                    ));
                }
                Some(Price {
                    input: p.input,
                    output: p.output,
                    cached_input: p.cached_input.unwrap_or(p.input),
                })
            }
            None => None,
        };
        if strategy == Strategy::Cheapest && price.is_none() {
            return Err(ConfigError::new(
                format!("{tfield}.price"),
                "strategy `cheapest` needs a price on every target",
            ));
        }
        if strategy == Strategy::Weighted && t.weight == 0 {
            return Err(ConfigError::new(
                format!("{tfield}.weight"),
                "strategy `weighted` needs a weight of at least 1",
            ));
        }
        let budget = match t.budget {
            Some(b) => {
                let budget = Budget {
                    rpm: b.rpm,
                    tpm: b.tpm,
                };
                budget.validate(&format!("{tfield}.budget"))?;
                budget
            }
            None => Budget::default(),
        };
        let upstream_name = compiled_upstreams
            .get(upstream)
            .map(|u| u.name.as_str())
            .unwrap_or(t.upstream.as_str());
        compiled.push(Target {
            upstream,
            model: t.model.clone(),
            weight: t.weight,
            price,
            budget,
            key: HealthBoard::key(upstream_name, &t.model),
            caps: capabilities::own(t.capabilities.as_ref(), &tfield)?,
        });
    }
    Ok(Action {
        name: name.to_owned(),
        targets: compiled,
        strategy,
    })
}

fn compile_match(
    m: &RawMatch,
    field: &str,
    tag_names: &[&str],
    has_clients: bool,
) -> Result<Matcher, ConfigError> {
    let models = match &m.model {
        Some(list) => {
            non_empty(list, &format!("{field}.model"))?;
            let mut mm = ModelMatch::default();
            for (i, pattern) in list.iter().enumerate() {
                if pattern.is_empty() {
                    return Err(ConfigError::new(
                        format!("{field}.model[{i}]"),
                        "empty model pattern",
                    ));
                }
                if pattern == "auto" {
                    mm.auto = true;
                } else {
                    mm.globs.push(Glob::new(pattern));
                }
            }
            Some(mm)
        }
        None => None,
    };
    if let Some(list) = &m.task {
        non_empty(list, &format!("{field}.task"))?;
    }
    if let Some(list) = &m.complexity {
        non_empty(list, &format!("{field}.complexity"))?;
    }
    if let Some(tags) = &m.tags {
        non_empty(tags, &format!("{field}.tags"))?;
        for (i, tag) in tags.iter().enumerate() {
            if !tag_names.contains(&tag.as_str()) {
                return Err(ConfigError::new(
                    format!("{field}.tags[{i}]"),
                    format!("unknown tag `{tag}` (define it in classifier.tags)"),
                ));
            }
        }
    }
    let endpoints = match &m.path {
        Some(paths) => {
            non_empty(paths, &format!("{field}.path"))?;
            let mut out = Vec::with_capacity(paths.len());
            for (i, p) in paths.iter().enumerate() {
                let e = ENDPOINT_NAMES
                    .iter()
                    .find(|(n, _)| n == p)
                    .map(|(_, e)| *e)
                    .ok_or_else(|| {
                        ConfigError::new(
                            format!("{field}.path[{i}]"),
                            format!(
                                "unknown endpoint `{p}`; expected one of chat, completions, responses, embeddings, messages"
                            ),
                        )
                    })?;
                out.push(e);
            }
            Some(out)
        }
        None => None,
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().flatten().enumerate() {
        headers.push(compile_header_match(h, &format!("{field}.headers[{i}]"))?);
    }
    for (name, given) in [
        ("clients", m.clients.is_some()),
        ("profile", m.profile.is_some()),
    ] {
        if given && !has_clients {
            return Err(ConfigError::new(
                format!("{field}.{name}"),
                "matches clients, but no `clients` section is configured",
            ));
        }
    }
    if let Some(list) = &m.profile {
        non_empty(list, &format!("{field}.profile"))?;
    }
    let clients = match &m.clients {
        Some(list) => Some(glob_list(list, &format!("{field}.clients"), "client name")?),
        None => None,
    };
    if let (Some(min), Some(max)) = (m.min_prompt_tokens, m.max_prompt_tokens) {
        if min > max {
            return Err(ConfigError::new(
                format!("{field}.min_prompt_tokens"),
                "must not be greater than max_prompt_tokens",
            ));
        }
    }
    Ok(Matcher {
        models,
        tasks: m.task.clone(),
        complexities: m.complexity.clone(),
        tags: m.tags.clone(),
        endpoints,
        headers,
        stream: m.stream,
        tools: m.tools,
        images: m.images,
        min_prompt_tokens: m.min_prompt_tokens,
        max_prompt_tokens: m.max_prompt_tokens,
        clients,
        profiles: m.profile.clone(),
    })
}

const ENDPOINT_NAMES: [(&str, Endpoint); 5] = [
    ("chat", Endpoint::ChatCompletions),
    ("completions", Endpoint::Completions),
    ("responses", Endpoint::Responses),
    ("embeddings", Endpoint::Embeddings),
    ("messages", Endpoint::AnthropicMessages),
];

fn compile_header_match(h: &RawHeaderMatch, field: &str) -> Result<HeaderMatcher, ConfigError> {
    let name = h.name.to_ascii_lowercase();
    // A token, or a pseudo-header (`:authority`, `:path`, ...): `:` followed by a token.
    let bare = name.strip_prefix(':').unwrap_or(&name);
    if bare.is_empty() || !bare.bytes().all(is_token_byte) {
        return Err(ConfigError::new(
            format!("{field}.name"),
            "not a header name",
        ));
    }
    let test = match (&h.exact, &h.regex, h.present) {
        (Some(v), None, None) => HeaderTest::Exact(v.clone()),
        (None, Some(r), None) => HeaderTest::Regex(
            regex::RegexBuilder::new(r)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    ConfigError::new(format!("{field}.regex"), format!("invalid regex: {e}"))
                })?,
        ),
        (None, None, Some(p)) => HeaderTest::Present(p),
        _ => {
            return Err(ConfigError::new(
                field,
                "give exactly one of exact, regex or present",
            ))
        }
    };
    Ok(HeaderMatcher { name, test })
}

/// A non-empty list of non-empty glob patterns (`what` names them in errors).
pub(crate) fn glob_list(
    list: &[String],
    field: &str,
    what: &str,
) -> Result<Vec<Glob>, ConfigError> {
    non_empty(list, field)?;
    if let Some(i) = list.iter().position(String::is_empty) {
        return Err(ConfigError::new(
            format!("{field}[{i}]"),
            format!("empty {what} pattern"),
        ));
    }
    Ok(list.iter().map(|p| Glob::new(p)).collect())
}

fn non_empty<T>(list: &[T], field: &str) -> Result<(), ConfigError> {
    if list.is_empty() {
        Err(ConfigError::new(
            field,
            "must not be an empty list (omit it to match anything)",
        ))
    } else {
        Ok(())
    }
}

/// Names of upstreams, aliases and rules: they appear in headers and stats.
fn check_name(name: &str, field: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("`{name}` is not a valid name: use 1-128 of A-Z a-z 0-9 - _ . : / @"),
        ))
    }
}

pub(crate) fn check_header_name(name: &str, field: &str) -> Result<(), ConfigError> {
    if !name.is_empty() && name.bytes().all(is_token_byte) {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("`{name}` is not a valid header name"),
        ))
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// True when `v` may be sent as a header value: visible ASCII, spaces and tabs only.
pub fn is_header_value_safe(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}
