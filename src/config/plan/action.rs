//! One action (a model alias, or a rule's or the default's targets): `use_model` resolved,
//! each target's upstream, model, price, weight and budget checked.

use std::collections::{BTreeMap, HashMap};

use super::names::is_header_value_safe;
use super::{Action, Price, Target, Upstream};
use crate::config::capabilities;
use crate::config::error::ConfigError;
use crate::config::raw::{RawAction, RawTarget, Strategy};
use crate::health::{Budget, HealthBoard};

pub(super) fn compile_action(
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
