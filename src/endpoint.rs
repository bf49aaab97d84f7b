//! Which API a request speaks (read from its canonical path: `crate::path`).

/// The request kinds the router reads and routes. Anything else passes through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Responses,
    Embeddings,
    /// Anthropic's `/v1/messages`, routed like the others without format change.
    AnthropicMessages,
}

impl Endpoint {
    /// The path after the `/v1` version segment, e.g. `/chat/completions`.
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Responses => "/responses",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::AnthropicMessages => "/messages",
        }
    }

    /// The name used in configuration (`match.path`) and diagnostics.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::AnthropicMessages => "messages",
        }
    }
}
