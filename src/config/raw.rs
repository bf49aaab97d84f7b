//! The plugin configuration exactly as operators write it (JSON). Every struct refuses
//! unknown fields, so a typo is an error at load rather than a silently ignored setting.
//! `plan.rs` turns this into the immutable `Plan` that requests walk.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::capabilities::Capabilities;
use crate::classify::{ClassifierConfig, Complexity, Task};

pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_CLUSTER_HEADER: &str = "x-llm-router-cluster";

fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_cluster_header() -> String {
    DEFAULT_CLUSTER_HEADER.to_owned()
}
fn default_true() -> bool {
    true
}
fn default_weight() -> u32 {
    1
}
fn default_path_prefix() -> String {
    "/v1".to_owned()
}

/// A JSON object as a map that refuses a repeated key: serde's own map impls silently keep
/// the last value, which would hide a duplicated upstream, alias or header.
fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueKeys<V>(PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueKeys<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(A::Error::custom(format_args!("duplicate key `{key}`")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    d.deserialize_map(UniqueKeys(PhantomData))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Providers, by the name rules and targets refer to.
    #[serde(deserialize_with = "unique_keys")]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Public model names (aliases) that clients may ask for.
    #[serde(default, deserialize_with = "unique_keys")]
    pub models: BTreeMap<String, RawAction>,
    /// Ordered routing rules; the first that matches decides.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Where `model: "auto"` (or no model) goes when no rule matched.
    #[serde(default)]
    pub default: Option<RawAction>,
    /// What happens to an explicit model that is neither an alias nor matched by a rule.
    #[serde(default)]
    pub unknown_model: UnknownModel,
    /// Upstream for `unknown_model: "passthrough"`.
    #[serde(default)]
    pub passthrough_upstream: Option<String>,
    #[serde(default)]
    pub classifier: ClassifierConfig,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The request header that the Envoy route table reads with `cluster_header`.
    #[serde(default = "default_cluster_header")]
    pub cluster_header: String,
    /// Whether responses carry the `x-llm-router-*` diagnostic headers.
    #[serde(default = "default_true")]
    pub response_headers: bool,
    /// Health tracking and cooldown of targets; on with defaults when omitted.
    #[serde(default)]
    pub health: RawHealth,
    /// Failover within one request across a rule's candidates (off unless `cluster` is set).
    #[serde(default)]
    pub failover: RawFailover,
    /// Token usage of responses: what the router adds to read it, and what it reports.
    #[serde(default)]
    pub usage: RawUsage,
    /// `GET /v1/models` (and `/v1/models/{id}`) answered from this configuration; `false`
    /// passes those requests through.
    #[serde(default = "default_true")]
    pub models_endpoint: bool,
    /// Publishes each request's record (decision, usage, the JSON access-log line) as
    /// Envoy filter state `wasm.llm_router.*` for access logs.
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// Client keys, per-client limits and policies; absent: no client authentication.
    #[serde(default)]
    pub clients: Option<RawClients>,
    /// Capabilities by upstream model id, for every target with that model (a target's own
    /// `capabilities` override them field by field).
    #[serde(default, deserialize_with = "unique_keys")]
    pub capabilities: BTreeMap<String, Capabilities>,
    /// Client limits and target budgets checked and charged at Envoy's global rate-limit
    /// service instead of this Envoy's shared data; absent: the embedded limits.
    #[serde(default)]
    pub rate_limit_service: Option<RawRateLimitService>,
}

/// `rate_limit_service`: where the limits of a fleet of Envoys live (README, "Limits
/// across Envoys").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitService {
    /// The Envoy cluster (HTTP/2) of the service.
    pub cluster: String,
    /// The service's domain (Limitador: namespace) the router's descriptors are in.
    #[serde(default)]
    pub domain: Option<String>,
    /// How long admission waits for the service.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// What a request gets when the service does not answer in time or fails.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// How usage learned at the end of a request is charged.
    #[serde(default)]
    pub usage_report: UsageReport,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// The request goes on without the service's limits (logged and counted).
    #[default]
    Allow,
    /// The request is refused with a 503 and `Retry-After`.
    Deny,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageReport {
    /// `ShouldRateLimit` with the usage as `hits_addend` (envoyproxy/ratelimit counts it
    /// even past the limit; Limitador does not count a hit that would pass it).
    #[default]
    ShouldRateLimit,
    /// Limitador's `kuadrant.service.ratelimit.v1.RateLimitService/Report`: always counted.
    Kuadrant,
}

/// `clients`: who may call the router, with which models, within which limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClients {
    /// Refuse (401) requests without a known client; default true.
    #[serde(default)]
    pub required: Option<bool>,
    /// A request header that an auth filter in front of the router (jwt_authn, ext_authz)
    /// sets to the client's name once it verified the caller.
    #[serde(default)]
    pub identity_header: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawClientKey>,
}

/// One client: its key (as a SHA-256 hash), models, limits and routing profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientKey {
    pub name: String,
    /// Hex SHA-256 of the key (`make key-hash`), or a list of them (several keys of one
    /// client, e.g. the old and the new one while rotating); only hashes are configured.
    #[serde(default)]
    pub key_sha256: Option<KeyHashes>,
    /// Models and aliases the client may use (globs); absent: all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Spend per calendar month (UTC), in the currency of the targets' prices.
    #[serde(default)]
    pub monthly_budget: Option<f64>,
    #[serde(default)]
    pub profile: Option<Profile>,
}

/// `key_sha256`: one hash or several.
#[derive(Debug, Clone)]
pub enum KeyHashes {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for KeyHashes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyHashes, D::Error> {
        struct Hashes;

        impl<'de> Visitor<'de> for Hashes {
            type Value = KeyHashes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex SHA-256 string or a list of them")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyHashes, E> {
                Ok(KeyHashes::One(v.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<KeyHashes, A::Error> {
                let mut out = Vec::new();
                while let Some(hex) = seq.next_element::<String>()? {
                    out.push(hex);
                }
                Ok(KeyHashes::Many(out))
            }
        }

        d.deserialize_any(Hashes)
    }
}

/// A client's default routing preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// The cheapest target first (`cheapest`).
    Cheapest,
    /// The action's targets in their configured order (`priority`).
    Quality,
    /// The lowest observed latency first (`lowest_latency`).
    Latency,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Cheapest => "cheapest",
            Profile::Quality => "quality",
            Profile::Latency => "latency",
        }
    }

    /// The strategy the profile stands for.
    pub fn strategy(self) -> Strategy {
        match self {
            Profile::Cheapest => Strategy::Cheapest,
            Profile::Quality => Strategy::Priority,
            Profile::Latency => Strategy::LowestLatency,
        }
    }
}

/// `usage`: reading token usage from responses.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsage {
    /// Adds `stream_options.include_usage: true` to streaming chat and completions requests
    /// that do not ask for it (so that the stream reports its usage), and removes the
    /// usage-only chunk this adds from what the client gets.
    #[serde(default)]
    pub include_stream_usage: bool,
    /// Adds `x-llm-router-cost` to non-streaming responses of priced targets (the response
    /// headers then wait for the end of the body).
    #[serde(default)]
    pub cost_header: bool,
}

/// `failover`: retries of one request on the next candidate, carried out by Envoy's router
/// through the cluster named here (an internal listener that routes each attempt; the
/// router's upstream filter rewrites it for its target).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    /// The Envoy cluster whose route retries (see README, "Failover"); none: no failover.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Attempts per request, the first included (2..=10, default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// `health`: when a target is skipped, and what happens when every candidate is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// `false` turns health tracking off (no shared-data counters, no skipping).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Consecutive failures tolerated; one more cools the target down.
    #[serde(default)]
    pub allowed_fails: Option<u32>,
    #[serde(default)]
    pub cooldown_seconds: Option<f64>,
    /// Absent: the default trigger; `null`: no failure-rate trigger.
    #[serde(default, deserialize_with = "present")]
    pub failure_rate: Option<Option<RawFailureRate>>,
    #[serde(default)]
    pub probe_timeout_seconds: Option<f64>,
    #[serde(default)]
    pub max_retry_after_seconds: Option<f64>,
    #[serde(default)]
    pub when_all_unhealthy: WhenAllUnhealthy,
}

/// `Some(value)` for a member that is present, even as `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailureRate {
    /// Failure fraction (0, 1] that cools the target down.
    pub threshold: f64,
    #[serde(default)]
    pub window_seconds: Option<f64>,
    #[serde(default)]
    pub min_requests: Option<u32>,
}

/// What a request gets when every candidate is cooling down or out of budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenAllUnhealthy {
    /// Send it to the candidate that recovers soonest.
    #[default]
    Soonest,
    /// Answer 503 with `Retry-After`.
    Reject,
}

/// A target's budget over a sliding minute.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownModel {
    #[default]
    Reject,
    Passthrough,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Envoy cluster name; defaults to the upstream's name.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Value for `:authority` (the provider's host name) when it differs from the client's.
    #[serde(default)]
    pub host: Option<String>,
    /// Replaces the leading `/v1` of the request path, e.g. `/openai/v1` for Groq.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    #[serde(default)]
    pub auth: Option<RawAuth>,
    /// Extra request headers sent to this upstream (e.g. `anthropic-version`).
    #[serde(default, deserialize_with = "unique_keys")]
    pub headers: BTreeMap<String, String>,
    /// The API the upstream speaks; requests in the other one are translated. Absent: each
    /// request goes in the API its client spoke (no translation).
    #[serde(default)]
    pub format: Option<UpstreamFormat>,
    /// The output limit of a request translated to Anthropic's API that set none (Anthropic
    /// requires one); default 4096.
    #[serde(default)]
    pub default_max_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamFormat {
    /// OpenAI's API (`/v1/chat/completions`, ...): OpenAI and compatible providers.
    Openai,
    /// Anthropic's Messages API (`/v1/messages`).
    Anthropic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(rename = "type")]
    pub kind: AuthKind,
    /// Name of the environment variable (handed to the VM by `vm_config.environment_variables`)
    /// that holds the key.
    pub key_env: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthKind {
    /// `Authorization: Bearer <key>` (OpenAI and most compatible providers).
    #[serde(rename = "bearer")]
    Bearer,
    /// `x-api-key: <key>` (Anthropic).
    #[serde(rename = "x-api-key")]
    XApiKey,
    /// `api-key: <key>` (Azure OpenAI).
    #[serde(rename = "api-key")]
    ApiKey,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub upstream: String,
    /// The model id the upstream knows.
    pub model: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub price: Option<RawPrice>,
    #[serde(default)]
    pub budget: Option<RawBudget>,
    /// What the target can serve (context window, output cap, vision, tools, ...).
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

/// Price in currency units per one million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens read from the provider's cache; `input` when not given.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Priority,
    Weighted,
    RoundRobin,
    Cheapest,
    LeastBusy,
    LowestLatency,
}

/// What a rule, an alias or the default does: pick among targets, or use an alias's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Instead of `targets`: use this alias's targets (and its strategy unless one is given).
    #[serde(default)]
    pub use_model: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub use_model: Option<String>,
}

impl RawRule {
    pub fn action(&self) -> RawAction {
        RawAction {
            targets: self.targets.clone(),
            strategy: self.strategy,
            use_model: self.use_model.clone(),
        }
    }
}

/// Conditions of a rule; all given ones must hold. Lists match when any element matches.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Requested model: exact names, globs, or `auto` (which also matches an omitted model).
    #[serde(default)]
    pub model: Option<Vec<String>>,
    #[serde(default)]
    pub task: Option<Vec<Task>>,
    #[serde(default)]
    pub complexity: Option<Vec<Complexity>>,
    /// Any of these operator tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Endpoint names: `chat`, `completions`, `responses`, `embeddings`, `messages`.
    #[serde(default)]
    pub path: Option<Vec<String>>,
    /// Request headers; all must match.
    #[serde(default)]
    pub headers: Option<Vec<RawHeaderMatch>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<bool>,
    #[serde(default)]
    pub images: Option<bool>,
    #[serde(default)]
    pub min_prompt_tokens: Option<u64>,
    #[serde(default)]
    pub max_prompt_tokens: Option<u64>,
    /// Client names (globs) of `clients.keys`.
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    /// Client profiles.
    #[serde(default)]
    pub profile: Option<Vec<Profile>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}
