//! The `/v1/models` endpoint, answered by the filter itself: clients (SDKs, chat UIs) list
//! models before they ask for one, and only the router knows which public names it routes.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::clients::Client;
use crate::config::Plan;
use crate::errors::ApiError;

/// The id that asks the router to choose; always listed, always first.
const AUTO: &str = "auto";
const LIST_PATH: &str = "/v1/models";
const OWNER: &str = "llm-router";
/// Anthropic's `created_at` is an RFC 3339 time; the configuration has none, so the epoch.
const EPOCH: &str = "1970-01-01T00:00:00Z";
/// Longer requested ids are not echoed into error messages.
const MAX_ECHOED_ID: usize = 256;

/// The content type of every answer.
pub const CONTENT_TYPE: &str = "application/json";

/// What `GET /v1/models` lists, computed once from the plan (at configuration load).
#[derive(Debug, Clone)]
pub struct ModelsCatalog {
    /// `auto` first, then the rest sorted, without duplicates.
    ids: Vec<String>,
    /// The list answers are precomputed so that a request only copies bytes.
    openai_list: ModelsAnswer,
    anthropic_list: ModelsAnswer,
}

/// A reply to send as is (content type [`CONTENT_TYPE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsAnswer {
    pub status: u32,
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct OpenAiModel<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct OpenAiList<'a> {
    object: &'static str,
    data: Vec<OpenAiModel<'a>>,
}

#[derive(Serialize)]
struct AnthropicModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    display_name: &'a str,
    created_at: &'static str,
}

#[derive(Serialize)]
struct AnthropicList<'a> {
    data: Vec<AnthropicModel<'a>>,
    has_more: bool,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorBody<'a>,
}

#[derive(Serialize)]
struct AnthropicErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

impl ModelsCatalog {
    /// Lists every alias, every exact model name a rule matches, and `auto`. Globs are left
    /// out: they name families, not models a client could pick.
    pub fn from_plan(plan: &Plan) -> ModelsCatalog {
        let mut names: BTreeSet<&str> = plan.aliases.keys().map(String::as_str).collect();
        for rule in &plan.rules {
            if let Some(models) = &rule.matcher.models {
                names.extend(
                    models
                        .globs
                        .iter()
                        .filter(|g| g.is_literal())
                        .map(|g| g.as_str()),
                );
            }
        }
        names.remove(AUTO);
        let ids: Vec<String> = std::iter::once(AUTO)
            .chain(names)
            .map(str::to_owned)
            .collect();
        let openai_list = list_answer(&ids, false);
        let anthropic_list = list_answer(&ids, true);
        ModelsCatalog {
            ids,
            openai_list,
            anthropic_list,
        }
    }

    /// For a GET (or HEAD) request: `Some(answer)` when `path` is `/v1/models` or
    /// `/v1/models/{id}` (query string ignored; trailing slash on the list tolerated; `{id}`
    /// percent-decoded and may contain `/`, e.g. `openai/gpt-4o`); `None` for any other path.
    /// `anthropic`: the client sent an `anthropic-version` header: answer in Anthropic's format.
    pub fn answer(&self, path: &str, anthropic: bool) -> Option<ModelsAnswer> {
        self.answer_for(path, anthropic, None)
    }

    /// [`ModelsCatalog::answer`] for `client`, which sees only the names its `models` allow
    /// (`auto` stays: it routes within what the client may use); others are unknown to it.
    pub fn answer_for(
        &self,
        path: &str,
        anthropic: bool,
        client: Option<&Client>,
    ) -> Option<ModelsAnswer> {
        let limited = client.filter(|c| c.models.is_some());
        let visible = |id: &str| id == AUTO || limited.is_none_or(|c| c.allows_model(id));
        Some(match asked(path)? {
            Asked::List => match limited {
                None if anthropic => self.anthropic_list.clone(),
                None => self.openai_list.clone(),
                Some(_) => {
                    let ids: Vec<String> =
                        self.ids.iter().filter(|id| visible(id)).cloned().collect();
                    list_answer(&ids, anthropic)
                }
            },
            Asked::One(raw_id) => self.single(raw_id, anthropic, &visible),
        })
    }

    /// Whether `path` is one that [`ModelsCatalog::answer`] answers.
    pub fn serves(path: &str) -> bool {
        asked(path).is_some()
    }

    /// `auto` first, then the other ids sorted.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    fn single(
        &self,
        raw_id: &str,
        anthropic: bool,
        visible: &dyn Fn(&str) -> bool,
    ) -> ModelsAnswer {
        // Ids that are not UTF-8 cannot be configured, so they are unknown too.
        let id = String::from_utf8(percent_decode(raw_id)).ok();
        match id {
            Some(id) if self.contains(&id) && visible(&id) => {
                if anthropic {
                    json_answer(200, &anthropic_model(&id))
                } else {
                    json_answer(200, &openai_model(&id))
                }
            }
            id => not_found(id.as_deref().filter(|id| echo_safe(id)), anthropic),
        }
    }

    fn contains(&self, id: &str) -> bool {
        id == AUTO
            || self
                .ids
                .get(1..)
                .is_some_and(|rest| rest.binary_search_by(|p| p.as_str().cmp(id)).is_ok())
    }
}

/// What a models path asks for.
enum Asked<'p> {
    List,
    /// A percent-encoded id.
    One(&'p str),
}

/// `None` for a path that is not `/v1/models` or `/v1/models/{id}` (see
/// [`ModelsCatalog::answer`]).
fn asked(path: &str) -> Option<Asked<'_>> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let rest = path.strip_prefix(LIST_PATH)?;
    if rest.is_empty() || rest == "/" {
        return Some(Asked::List);
    }
    rest.strip_prefix('/').map(Asked::One)
}

/// The list answer of `ids`, in OpenAI's or Anthropic's format.
fn list_answer(ids: &[String], anthropic: bool) -> ModelsAnswer {
    if anthropic {
        json_answer(
            200,
            &AnthropicList {
                data: ids.iter().map(|id| anthropic_model(id)).collect(),
                has_more: false,
                first_id: ids.first().map(String::as_str),
                last_id: ids.last().map(String::as_str),
            },
        )
    } else {
        json_answer(
            200,
            &OpenAiList {
                object: "list",
                data: ids.iter().map(|id| openai_model(id)).collect(),
            },
        )
    }
}

fn openai_model(id: &str) -> OpenAiModel<'_> {
    OpenAiModel {
        id,
        object: "model",
        created: 0,
        owned_by: OWNER,
    }
}

fn anthropic_model(id: &str) -> AnthropicModel<'_> {
    AnthropicModel {
        kind: "model",
        id,
        display_name: id,
        created_at: EPOCH,
    }
}

/// The 404 for an unknown id; `id` is `None` when it must not be echoed.
fn not_found(id: Option<&str>, anthropic: bool) -> ModelsAnswer {
    let error = match id {
        Some(id) => ApiError::model_not_found(id),
        None => ApiError {
            status: 404,
            message: "The requested model does not exist or is not routed by this gateway."
                .to_owned(),
            kind: "invalid_request_error",
            param: Some("model"),
            code: "model_not_found",
        },
    };
    if anthropic {
        json_answer(
            error.status,
            &AnthropicError {
                kind: "error",
                error: AnthropicErrorBody {
                    kind: "not_found_error",
                    message: &error.message,
                },
            },
        )
    } else {
        ModelsAnswer {
            status: error.status,
            body: error.body(),
        }
    }
}

/// Whether a requested id may appear in a message: bounded and free of control characters,
/// so that a client cannot forge log lines or bloat replies through it.
fn echo_safe(id: &str) -> bool {
    id.len() <= MAX_ECHOED_ID && !id.chars().any(char::is_control)
}

/// Serialising these plain structs cannot fail; should it, answer 500 rather than trap.
fn json_answer<T: Serialize>(status: u32, value: &T) -> ModelsAnswer {
    match serde_json::to_vec(value) {
        Ok(body) => ModelsAnswer { status, body },
        Err(e) => {
            let error = ApiError::internal(format!("cannot serialise the model list: {e}"));
            ModelsAnswer {
                status: error.status,
                body: error.body(),
            }
        }
    }
}

/// Decodes `%XX` escapes (so `openai%2Fgpt-4o` names `openai/gpt-4o`); a `%` not followed by
/// two hex digits stays as it is, as lenient servers do.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex_value(h).zip(hex_value(l)),
            _ => None,
        };
        match escaped {
            Some((h, l)) => {
                out.push((h << 4) | l);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
