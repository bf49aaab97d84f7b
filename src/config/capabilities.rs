//! `capabilities`: what a target can serve (context window, output cap, vision, tools, JSON
//! output, structured outputs, streaming), declared on a target or, for every target with a
//! model id, in the top-level `capabilities` map. Compiled once into each [`Target`]: the
//! target's own fields over its model's entry, field by field. An undeclared field means
//! unknown (routing does not skip on it); see `route::capable` for how requests use them.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::error::ConfigError;
use super::plan::{Action, Rule, Target};

/// One capability, by its configuration field name (also the `reason` of the skip stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    ContextWindow,
    MaxOutputTokens,
    Vision,
    Tools,
    JsonOutput,
    StructuredOutputs,
    Streaming,
}

impl Capability {
    /// Every capability, in the order requests are checked against them.
    pub const ALL: [Capability; 7] = [
        Capability::ContextWindow,
        Capability::MaxOutputTokens,
        Capability::Vision,
        Capability::Tools,
        Capability::JsonOutput,
        Capability::StructuredOutputs,
        Capability::Streaming,
    ];

    /// The field name in `capabilities`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::ContextWindow => "context_window",
            Capability::MaxOutputTokens => "max_output_tokens",
            Capability::Vision => "vision",
            Capability::Tools => "tools",
            Capability::JsonOutput => "json_output",
            Capability::StructuredOutputs => "structured_outputs",
            Capability::Streaming => "streaming",
        }
    }

    /// Index into [`Capability::ALL`].
    pub fn slot(self) -> usize {
        match self {
            Capability::ContextWindow => 0,
            Capability::MaxOutputTokens => 1,
            Capability::Vision => 2,
            Capability::Tools => 3,
            Capability::JsonOutput => 4,
            Capability::StructuredOutputs => 5,
            Capability::Streaming => 6,
        }
    }
}

/// What a target declares it can serve; `None` is undeclared (unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Prompt plus output, in tokens.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// The largest output a request may ask for (`max_tokens` and friends).
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// Image inputs.
    #[serde(default)]
    pub vision: Option<bool>,
    /// Tool (function) definitions.
    #[serde(default)]
    pub tools: Option<bool>,
    /// `response_format: {"type": "json_object"}`.
    #[serde(default)]
    pub json_output: Option<bool>,
    /// `response_format: {"type": "json_schema"}`.
    #[serde(default)]
    pub structured_outputs: Option<bool>,
    /// `"stream": true`.
    #[serde(default)]
    pub streaming: Option<bool>,
}

impl Capabilities {
    /// A boolean capability as declared (`None` for the two token limits).
    pub fn flag(&self, c: Capability) -> Option<bool> {
        match c {
            Capability::Vision => self.vision,
            Capability::Tools => self.tools,
            Capability::JsonOutput => self.json_output,
            Capability::StructuredOutputs => self.structured_outputs,
            Capability::Streaming => self.streaming,
            Capability::ContextWindow | Capability::MaxOutputTokens => None,
        }
    }

    /// `self` with every field that `over` declares taken from `over`.
    pub fn overlay(self, over: &Capabilities) -> Capabilities {
        Capabilities {
            context_window: over.context_window.or(self.context_window),
            max_output_tokens: over.max_output_tokens.or(self.max_output_tokens),
            vision: over.vision.or(self.vision),
            tools: over.tools.or(self.tools),
            json_output: over.json_output.or(self.json_output),
            structured_outputs: over.structured_outputs.or(self.structured_outputs),
            streaming: over.streaming.or(self.streaming),
        }
    }

    /// The first field both declare, with different values.
    fn conflict(&self, other: &Capabilities) -> Option<Capability> {
        Capability::ALL
            .into_iter()
            .find(|c| matches!((self.pick(*c), other.pick(*c)), (Some(a), Some(b)) if a != b))
    }

    /// One field as a comparable value.
    fn pick(&self, c: Capability) -> Option<u64> {
        match c {
            Capability::ContextWindow => self.context_window,
            Capability::MaxOutputTokens => self.max_output_tokens,
            _ => self.flag(c).map(u64::from),
        }
    }

    /// Token counts are at least 1, and the output cap fits the window. `field` names the
    /// `capabilities` object.
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        for (name, value) in [
            ("context_window", self.context_window),
            ("max_output_tokens", self.max_output_tokens),
        ] {
            if value == Some(0) {
                return Err(ConfigError::new(
                    format!("{field}.{name}"),
                    "must be a number of tokens of at least 1 (leave it out when unknown)",
                ));
            }
        }
        check_output_fits(self, &format!("{field}.max_output_tokens"))
    }
}

fn check_output_fits(caps: &Capabilities, field: &str) -> Result<(), ConfigError> {
    match (caps.max_output_tokens, caps.context_window) {
        (Some(out), Some(window)) if out > window => Err(ConfigError::new(
            field,
            format!("{out} is greater than the context_window {window}"),
        )),
        _ => Ok(()),
    }
}

/// A target's own `capabilities`, validated (`field`: the target's path).
pub(crate) fn own(raw: Option<&Capabilities>, field: &str) -> Result<Capabilities, ConfigError> {
    let caps = raw.copied().unwrap_or_default();
    caps.validate(&format!("{field}.capabilities"))?;
    Ok(caps)
}

/// Gives every target of every action its capabilities: the fields declared on any listing of
/// the same target (upstream + model: two listings that declare a field differently are
/// refused), over the top-level entry of its model id. Actions are walked in configuration
/// order, so an error names the same place every time.
pub(crate) fn resolve(
    models: &BTreeMap<String, Capabilities>,
    aliases: &mut HashMap<String, Action>,
    rules: &mut [Rule],
    default: Option<&mut Action>,
) -> Result<(), ConfigError> {
    for (model, caps) in models {
        caps.validate(&format!("capabilities.{model}"))?;
    }
    let mut by_alias: Vec<(&String, &mut Action)> = aliases.iter_mut().collect();
    by_alias.sort_by(|a, b| a.0.cmp(b.0));
    let mut actions: Vec<(String, &mut Action)> = by_alias
        .into_iter()
        .map(|(alias, a)| (format!("models.{alias}"), a))
        .chain(
            rules
                .iter_mut()
                .enumerate()
                .map(|(i, r)| (format!("rules[{i}]"), &mut r.action)),
        )
        .chain(default.map(|d| ("default".to_owned(), d)))
        .collect();

    // The target's own fields, gathered over its listings, with where each key was first seen.
    let mut declared: HashMap<String, (Capabilities, String)> = HashMap::new();
    for (field, action) in &actions {
        for (j, t) in action.targets.iter().enumerate() {
            let here = format!("{field}.targets[{j}]");
            let Some((known, at)) = declared.get_mut(&t.key) else {
                declared.insert(t.key.clone(), (t.caps, here));
                continue;
            };
            if let Some(c) = known.conflict(&t.caps) {
                return Err(ConfigError::new(
                    format!("{here}.capabilities.{}", c.name()),
                    format!(
                        "differs from the {} of the same target at {at}; declare it once (or by model id in the top-level `capabilities`)",
                        c.name()
                    ),
                ));
            }
            *known = known.overlay(&t.caps);
        }
    }
    if let Some(model) = models.keys().find(|m| {
        !actions
            .iter()
            .any(|(_, a)| a.targets.iter().any(|t| t.model == **m))
    }) {
        return Err(ConfigError::new(
            format!("capabilities.{model}"),
            format!(
                "no target has the model id `{model}` (entries apply to targets by their `model`)"
            ),
        ));
    }
    for (_, action) in &mut actions {
        for t in &mut action.targets {
            apply(t, models, &declared)?;
        }
    }
    Ok(())
}

/// The target's capabilities: its own fields over its model's.
fn apply(
    t: &mut Target,
    models: &BTreeMap<String, Capabilities>,
    declared: &HashMap<String, (Capabilities, String)>,
) -> Result<(), ConfigError> {
    let (own, at) = match declared.get(&t.key) {
        Some((caps, at)) => (*caps, at.as_str()),
        None => (t.caps, ""),
    };
    let by_model = models.get(&t.model).copied().unwrap_or_default();
    let caps = by_model.overlay(&own);
    let field = if own.max_output_tokens.is_some() || by_model.max_output_tokens.is_none() {
        format!("{at}.capabilities.max_output_tokens")
    } else {
        format!("capabilities.{}.max_output_tokens", t.model)
    };
    check_output_fits(&caps, &field)?;
    t.caps = caps;
    Ok(())
}

#[cfg(test)]
mod tests;
