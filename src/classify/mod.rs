//! Classification of a request: task, complexity, operator tags, prompt-size estimate.
//!
//! Everything is decided over the already-parsed body, without a network call:
//! [`ClassifierPlan::compile`] precompiles the tag regexes and warms the word index once per
//! configuration; [`ClassifierPlan::classify`] borrows the prompt text from the body (no
//! copies), scans the last user message and the system prompt once (long texts only at their
//! ends), lets the learned model (or the heuristics) pick task and complexity, and matches the
//! tag regex sets. It never panics, whatever the body's shape: what cannot be read is skipped.
//!
//! * Text extraction per endpoint: `text.rs`.
//! * Word lists: `lexicon.rs`.
//! * The heuristic scan, task and complexity rules and weights: `heuristics.rs`.
//! * What the request fields say (tools, format, effort, output budget): `request_fields.rs`.
//! * The learned model: `learned.rs`; its scoring against labelled sets: `eval.rs`.
//! * Operator tags: `tags.rs`.

pub mod eval;
mod heuristics;
pub mod learned;
mod lexicon;
mod request_fields;
mod tags;
mod text;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::error::ConfigError;
use crate::endpoint::Endpoint;

pub use tags::{MAX_TAGS, TAG_REGEX_DFA_SIZE_LIMIT, TAG_REGEX_SIZE_LIMIT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Coding,
    Reasoning,
    Math,
    Vision,
    Summarization,
    Extraction,
    Embedding,
    General,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Complexity {
    Low,
    Medium,
    High,
    Xhigh,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub task: Task,
    pub complexity: Complexity,
    /// Names of the operator tags that matched, in configuration order.
    pub tags: Vec<String>,
    /// See [`ClassifierPlan::classify`] for the formula.
    pub estimated_prompt_tokens: u64,
    pub has_tools: bool,
    pub has_images: bool,
    pub stream: bool,
}

/// The `classifier` section of the plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Operator-defined tags, matched against the prompt text.
    #[serde(default)]
    pub tags: Vec<TagRule>,
    /// Score cut-offs of the complexity levels (of the heuristic method).
    #[serde(default)]
    pub complexity: ComplexityThresholds,
    /// How task and complexity are decided.
    #[serde(default)]
    pub method: Method,
}

/// How the classifier decides task and complexity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The linear model embedded in the filter (`learned.rs`), trained on the labelled sets.
    #[default]
    Learned,
    /// The hand-written rules and weights (`heuristics.rs`), tunable by `complexity`.
    Heuristic,
}

/// Complexity score cut-offs: a score `>= medium` is Medium, `>= high` High,
/// `>= xhigh` Xhigh, anything lower Low. They must satisfy
/// `1 <= medium < high < xhigh`. Omitted fields keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplexityThresholds {
    /// Default 2.
    pub medium: u32,
    /// Default 5.
    pub high: u32,
    /// Default 9.
    pub xhigh: u32,
}

impl Default for ComplexityThresholds {
    fn default() -> Self {
        ComplexityThresholds {
            medium: 2,
            high: 5,
            xhigh: 9,
        }
    }
}

/// An operator tag: attached to the classification when any keyword or regex
/// matches the text in `scope`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    /// Unique, `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// Case-insensitive whole-word matches (see [`TagScope`] for where). Trimmed;
    /// word boundaries apply at keyword edges that are ASCII letters, digits or
    /// `_`, so `c++` or CJK keywords work too.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Rust `regex` syntax, used as written (case-sensitive unless `(?i)`).
    /// Each compiled program is limited to [`TAG_REGEX_SIZE_LIMIT`] bytes.
    #[serde(default)]
    pub regex: Vec<String>,
    #[serde(default)]
    pub scope: TagScope,
}

/// Which text a tag looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagScope {
    /// The last message holding user-written text (the default).
    #[default]
    LastUser,
    /// Every user message.
    User,
    /// System / developer prompt, user and assistant text (never tool results
    /// or tool-call arguments).
    All,
}

#[derive(Debug, Clone)]
pub struct ClassifierPlan {
    tags: tags::Tags,
    thresholds: ComplexityThresholds,
    /// The model, when the method is `learned` (the heuristics otherwise).
    model: Option<&'static learned::Model<'static>>,
}

/// Token estimate of each chat-style message's framing (role, separators).
pub const TOKENS_PER_MESSAGE: u64 = 4;

impl ClassifierPlan {
    /// Validates `cfg` (the config section at JSON path `field`) and
    /// precompiles everything `classify` needs.
    pub fn compile(cfg: &ClassifierConfig, field: &str) -> Result<ClassifierPlan, ConfigError> {
        let t = cfg.complexity;
        if t.medium < 1 {
            return Err(ConfigError::new(
                format!("{field}.complexity.medium"),
                "must be at least 1 (a score of 0 is always low)",
            ));
        }
        if t.high <= t.medium {
            return Err(ConfigError::new(
                format!("{field}.complexity.high"),
                format!(
                    "must be greater than complexity.medium ({}), got {}",
                    t.medium, t.high
                ),
            ));
        }
        if t.xhigh <= t.high {
            return Err(ConfigError::new(
                format!("{field}.complexity.xhigh"),
                format!(
                    "must be greater than complexity.high ({}), got {}",
                    t.high, t.xhigh
                ),
            ));
        }
        let tags = tags::compile(&cfg.tags, field)?;
        lexicon::Lexicon::get();
        let model = match cfg.method {
            Method::Learned => Some(learned::Model::embedded().ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.method"),
                    "`learned` needs the embedded model, and this build has none (make train)",
                )
            })?),
            Method::Heuristic => None,
        };
        Ok(ClassifierPlan {
            tags,
            thresholds: t,
            model,
        })
    }

    /// Names of the configured tags, in configuration order.
    pub fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.tags.names()
    }

    /// Classifies a request body sent to `endpoint`.
    ///
    /// * `task`: `embedding` for the embeddings endpoint; else `vision` if any
    ///   image part is present; else the text heuristics (`heuristics.rs`),
    ///   scored on the last user message (double weight) and the system
    ///   prompt, plus `response_format`, forced `tool_choice` and reasoning
    ///   effort.
    /// * `complexity`: see `heuristics.rs` and [`ComplexityThresholds`].
    /// * `estimated_prompt_tokens` =
    ///   `ceil(chars / 4) + 4 × messages + ceil(json_bytes / 4) + token_ids`, where
    ///   `chars` counts the characters (not bytes) of all prompt text (system,
    ///   user, assistant, tool results, tool-call names and arguments),
    ///   `messages` counts chat-style messages (the separate system prompt /
    ///   instructions counts as one; completions and embeddings inputs have
    ///   no per-message overhead), `json_bytes` is the compact JSON size of
    ///   `tools` / `functions` and of Anthropic `tool_use` inputs, and
    ///   `token_ids` counts prompts given as token arrays. Images are not
    ///   counted.
    /// * `has_tools`: non-empty `tools` (or legacy `functions`) array.
    /// * `has_images`: any image part anywhere in the prompt (`image_url`,
    ///   `input_image`, Anthropic `image`, also inside `tool_result`).
    /// * `stream`: `stream` is `true`.
    pub fn classify(&self, body: &Value, endpoint: Endpoint) -> Classification {
        let read = Read::new(body, endpoint, self.model.is_some());
        let has_images = read.ex.images > 0;
        // The text's task and level: the model's, or the heuristics'.
        let (text_task, level) = match (self.model, endpoint) {
            (_, Endpoint::Embeddings) => (None, None),
            (Some(model), _) => {
                let (task, level) = model.predict(&read.input());
                (Some(task), Some(level))
            }
            (None, _) => (
                Some(heuristics::pick_task(&read.user, &read.system, &read.req)),
                None,
            ),
        };
        // A turn that opens with a line of code is code work, whatever its comments say
        // (HumanEval's problems: a signature and a docstring).
        let text_task = text_task.map(|t| {
            if text::opens_with_code(&read.ex) {
                Task::Coding
            } else {
                t
            }
        });
        let task = match (endpoint, text_task) {
            (Endpoint::Embeddings, _) => Task::Embedding,
            _ if has_images => Task::Vision,
            (_, Some(task)) => task,
            (_, None) => Task::General,
        };
        let req = &read.req;
        let complexity = match level {
            // The labelled sets hold no prompt beyond a few thousand tokens: above that the
            // size alone sets a floor (as in the heuristics), a long context being costly.
            Some(level) => heuristics::with_effort(
                level.max(heuristics::size_floor(read.tokens)),
                req.effort,
                read.tokens,
            ),
            None => heuristics::complexity(&read.complexity_inputs(text_task), &self.thresholds),
        };
        Classification {
            task,
            complexity,
            tags: self.tags.matching(&read.ex),
            estimated_prompt_tokens: read.tokens,
            has_tools: req.has_tools,
            has_images,
            stream: req.stream,
        }
    }

    /// The learned model's features of a request (for the trainer): hashed slots, with
    /// repeats, and the dense vector.
    pub fn features(body: &Value, endpoint: Endpoint) -> (Vec<(u32, f32)>, [f32; learned::DENSE]) {
        learned::features(&Read::new(body, endpoint, true).input())
    }
}

/// What one pass over the request reads: its texts, request fields, the heuristic signals
/// of the last user turn and the system prompt, the token estimate.
struct Read<'a> {
    ex: text::Extracted<'a>,
    req: heuristics::RequestSignals,
    user: heuristics::TextSignals,
    system: heuristics::TextSignals,
    tokens: u64,
    endpoint: Endpoint,
}

impl<'a> Read<'a> {
    /// `learned`: the model reads the scan's signals of the texts' edges only
    /// ([`learned::SCAN_EDGES`]), the heuristics those of up to 12 KiB.
    fn new(body: &'a Value, endpoint: Endpoint, learned: bool) -> Read<'a> {
        let ex = text::extract(body, endpoint);
        let req = heuristics::RequestSignals::read(body);
        let text_tokens = ex.text_chars.div_ceil(4);
        let json_tokens = ex.json_bytes.saturating_add(req.tool_def_bytes).div_ceil(4);
        let tokens = text_tokens
            .saturating_add(TOKENS_PER_MESSAGE.saturating_mul(u64::from(ex.messages)))
            .saturating_add(json_tokens)
            .saturating_add(ex.raw_tokens);
        let (user, system) = if endpoint == Endpoint::Embeddings {
            Default::default()
        } else {
            let (head, tail) = if learned {
                learned::SCAN_EDGES
            } else {
                (heuristics::SCAN_HEAD, heuristics::SCAN_TAIL)
            };
            let mut user = heuristics::Scanner::new();
            for t in ex.last_user_texts() {
                user.scan(t, head, tail);
            }
            let mut system = heuristics::Scanner::new();
            for t in ex.texts_of(&[text::Role::System]) {
                system.scan(t, head, tail);
            }
            (user.finish(), system.finish())
        };
        Read {
            ex,
            req,
            user,
            system,
            tokens,
            endpoint,
        }
    }

    fn input(&self) -> learned::Input<'_> {
        learned::Input {
            ex: &self.ex,
            user: &self.user,
            system: &self.system,
            req: &self.req,
            tokens: self.tokens,
            endpoint: self.endpoint,
        }
    }

    fn complexity_inputs(&self, text_task: Option<Task>) -> heuristics::ComplexityInputs {
        let (user, system, req) = (&self.user, &self.system, &self.req);
        heuristics::ComplexityInputs {
            tokens: self.tokens,
            turns: self.ex.turns,
            multi_step: user.multi_step.saturating_add(system.multi_step / 2),
            rigor: user.rigor.saturating_add(system.rigor / 2),
            has_tools: req.has_tools,
            structured_output: req.structured_output,
            max_output_tokens: req.max_output_tokens,
            task: text_task,
            effort: req.effort,
        }
    }
}
