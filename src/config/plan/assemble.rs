//! Putting a [`Plan`] together: [`compile`] parses the JSON, [`compile_raw`] compiles each
//! section (through the sibling modules) and checks what spans sections: the cluster header
//! against upstream headers, the failover cluster, one price and budget per target.

use std::collections::{BTreeMap, HashMap};

use super::action::compile_action;
use super::health::compile_health;
use super::matcher::compile_match;
use super::names::{check_header_name, check_name, is_header_value_safe};
use super::upstream::compile_upstream;
use super::{Action, FailoverPlan, Plan, Rule, TargetRef, Upstream};
use crate::classify::ClassifierPlan;
use crate::clients::ClientsPlan;
use crate::config::capabilities;
use crate::config::error::ConfigError;
use crate::config::raw::{RawAction, RawConfig, RawFailover, Strategy, UnknownModel};
use crate::health::Budget;
use crate::models::ModelsCatalog;
use crate::ratelimit::ServicePlan;

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
        rate_limit_service: None,
    };
    if let Some(service) = &raw.rate_limit_service {
        let service = ServicePlan::compile(service, "rate_limit_service")?;
        plan.rate_limit_service = Some(service.with_budgets(take_budgets(&mut plan)));
    }
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

/// Every target's budget, taken out of the plan (with a rate-limit service the budgets are
/// counted there, not on this Envoy's health board), by target key.
fn take_budgets(plan: &mut Plan) -> HashMap<String, Budget> {
    let unset = Budget::default();
    let mut out = HashMap::new();
    for (key, t) in plan.targets.iter_mut() {
        if t.budget != unset {
            out.insert(key.clone(), std::mem::take(&mut t.budget));
        }
    }
    let actions = plan
        .aliases
        .values_mut()
        .chain(plan.rules.iter_mut().map(|r| &mut r.action))
        .chain(plan.default.iter_mut());
    for action in actions {
        for t in &mut action.targets {
            t.budget = Budget::default();
        }
    }
    out
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
