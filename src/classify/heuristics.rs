//! The cheap heuristics: one pass over the scanned text collecting signals,
//! the request-level signals, and the rules that turn them into a task and a
//! complexity.
//!
//! # Task
//!
//! Each scored task ([`SCORED`], which is also the tie-break order) gets
//! points from its word lists (`lexicon.rs`: strong words uncapped, topic words
//! capped at [`TOPIC_CAP`](super::lexicon::TOPIC_CAP)) plus structural evidence:
//!
//! | evidence | task | points |
//! |---|---|---|
//! | a ```` ```lang ```` fence with a code language | coding | 4 (once) |
//! | bare ```` ``` ```` fences only (no data fence) | coding | 3 (once) |
//! | `#include`, `#define`, a leading `#!` | coding | 3 (once) |
//! | `=>` `);` `==` `!=` `&&` `\|\|` `::` `->` `+=` `++` | coding | ½ each, at most 3 |
//! | `{` `}` and line-ending `;` ≥ 4 and ≥ 2 % of the bytes | coding | 2 |
//! | code lines (`def f(x):`, `fn main() {`, see `CODE_LINE_STARTERS`) | coding | 1 each, at most 4 |
//! | LaTeX (`\frac`, `\int`, … `\(`, `\[`, `$$`) or `∫ ∑ √ ∂ ∞ ≤ ≥ ≠` | math | 3, or 5 from 3 occurrences |
//! | arithmetic `12 * 7`, `3 = 7`, `x^2`, `6 / 3`, `12 × 7` | math | 1 each, at most 3 |
//!
//! The score of a task is `2 × points(last user message) + points(system
//! prompt) + 2 × request points`, where request points are: extraction +3 for
//! `response_format`/`text.format`/`output_format` of type `json_object` or
//! `json_schema`, extraction +3 for a forced tool choice (`"required"`,
//! `"any"`, or a named function/tool) with tools present, reasoning +1/+2 for
//! a reasoning effort of medium / high or xhigh. The best score wins if it
//! reaches [`TASK_THRESHOLD`] (2 points in the last user message), ties going to
//! the earlier task of [`SCORED`]; otherwise the task is `general`.
//!
//! Long texts are scanned only in their first [`SCAN_HEAD`] and last
//! [`SCAN_TAIL`] bytes: instructions sit at the ends, and this bounds the cost.
//!
//! # Complexity
//!
//! A score adds up (each factor documented on its constant):
//! [`SIZE_TIERS`], [`DEPTH_TIERS`], [`MULTI_STEP_TIERS`], [`RIGOR_TIERS`],
//! [`TOOLS_POINTS`], [`STRUCTURED_POINTS`], [`MAX_OUTPUT_TIERS`],
//! [`TASK_POINTS`], [`MEDIUM_EFFORT_POINTS`]; the thresholds of the config map
//! it to a level; then an explicit reasoning effort dominates: `high` → at
//! least High, `xhigh` → Xhigh, `low`/`minimal`/`none` → at most Medium unless
//! the prompt exceeds [`HUGE_PROMPT_TOKENS`].
//!
//! This file holds those rules (the task pick and the complexity score); the scan that
//! collects the text signals is in `heuristics/scan.rs`, its byte-level primitives in
//! `heuristics/bytes.rs`.

mod bytes;
mod scan;

pub(crate) use super::request_fields::{Effort, RequestSignals};
use super::{Complexity, ComplexityThresholds, Task};
pub(crate) use bytes::head_and_tail;
pub(crate) use scan::{Scanner, TextSignals};

/// The tasks scored from text, in tie-break order.
pub(crate) const SCORED: [Task; 5] = [
    Task::Coding,
    Task::Math,
    Task::Reasoning,
    Task::Extraction,
    Task::Summarization,
];
const CODING: usize = 0;
const MATH: usize = 1;
pub(crate) const REASONING: usize = 2;
pub(crate) const EXTRACTION: usize = 3;

/// Minimum weighted score for a task other than `general` (= 2 points in the
/// last user message, which counts double).
pub(crate) const TASK_THRESHOLD: u32 = 4;

/// Bytes scanned at the start of a long text.
pub(crate) const SCAN_HEAD: usize = 8 * 1024;
/// Bytes scanned at the end of a long text.
pub(crate) const SCAN_TAIL: usize = 4 * 1024;

/// Complexity points for the estimated prompt size: the first tier whose token
/// count is exceeded (> 32k: 9, > 8k: 5, > 2k: 2). With the default thresholds
/// the size alone makes a prompt Medium, High or Xhigh.
pub(crate) const SIZE_TIERS: [(u64, u32); 3] = [(32_000, 9), (8_000, 5), (2_000, 2)];
/// Complexity points for conversation depth, i.e. user + assistant messages
/// (≥ 20: 2, ≥ 6: 1).
pub(crate) const DEPTH_TIERS: [(u32, u32); 2] = [(20, 2), (6, 1)];
/// Complexity points for multi-step markers (sequencing words such as
/// "first", "then", "finally", and numbered list items "1." / "2)") counted in
/// the last user message plus half those of the system prompt (≥ 6: 3, ≥ 3: 2):
/// three explicit steps alone make a prompt Medium.
pub(crate) const MULTI_STEP_TIERS: [(u32, u32); 2] = [(6, 3), (3, 2)];
/// Complexity points for proof / rigor words ("prove", "rigorous", "formal",
/// "derive", …), same counting as multi-step (≥ 3: 3, ≥ 1: 2).
pub(crate) const RIGOR_TIERS: [(u32, u32); 2] = [(3, 3), (1, 2)];
/// Complexity points when tools are declared.
pub(crate) const TOOLS_POINTS: u32 = 1;
/// Complexity points when structured output (JSON object / schema) is requested.
pub(crate) const STRUCTURED_POINTS: u32 = 1;
/// Complexity points for the requested output budget (`max_tokens`,
/// `max_completion_tokens`, `max_output_tokens`): > 16384: 2, > 4096: 1.
pub(crate) const MAX_OUTPUT_TIERS: [(u64, u32); 2] = [(16_384, 2), (4_096, 1)];
/// Complexity points when the text task is coding, math or reasoning (also
/// for image requests whose text reads that way).
pub(crate) const TASK_POINTS: u32 = 1;
/// Complexity points for an explicit reasoning effort of `medium`.
pub(crate) const MEDIUM_EFFORT_POINTS: u32 = 1;
/// Above this many estimated prompt tokens, a low / minimal effort no longer
/// caps the complexity at Medium.
pub(crate) const HUGE_PROMPT_TOKENS: u64 = 32_000;

fn tier<T: PartialOrd + Copy>(tiers: &[(T, u32)], value: T, exceed: bool) -> u32 {
    tiers
        .iter()
        .find(|&&(limit, _)| {
            if exceed {
                value > limit
            } else {
                value >= limit
            }
        })
        .map_or(0, |&(_, points)| points)
}

/// The text task: the best weighted score of [`SCORED`], or `general`.
pub(crate) fn pick_task(user: &TextSignals, system: &TextSignals, req: &RequestSignals) -> Task {
    let request = req.task_points();
    let mut best = Task::General;
    let mut best_score = TASK_THRESHOLD.saturating_sub(1);
    for (i, task) in SCORED.iter().enumerate() {
        let score = user
            .points(i)
            .saturating_mul(2)
            .saturating_add(system.points(i))
            .saturating_add(request.get(i).copied().unwrap_or(0).saturating_mul(2));
        if score > best_score {
            best = *task;
            best_score = score;
        }
    }
    best
}

/// Everything the complexity score looks at.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ComplexityInputs {
    pub tokens: u64,
    pub turns: u32,
    pub multi_step: u32,
    pub rigor: u32,
    pub has_tools: bool,
    pub structured_output: bool,
    pub max_output_tokens: u64,
    /// The text task (before the image / embedding override).
    pub task: Option<Task>,
    pub effort: Option<Effort>,
}

/// The complexity score, before thresholds and effort clamping.
pub(crate) fn complexity_score(c: &ComplexityInputs) -> u32 {
    let mut score = tier(&SIZE_TIERS, c.tokens, true);
    score += tier(&DEPTH_TIERS, c.turns, false);
    score += tier(&MULTI_STEP_TIERS, c.multi_step, false);
    score += tier(&RIGOR_TIERS, c.rigor, false);
    if c.has_tools {
        score += TOOLS_POINTS;
    }
    if c.structured_output {
        score += STRUCTURED_POINTS;
    }
    score += tier(&MAX_OUTPUT_TIERS, c.max_output_tokens, true);
    if matches!(c.task, Some(Task::Coding | Task::Math | Task::Reasoning)) {
        score += TASK_POINTS;
    }
    if c.effort == Some(Effort::Medium) {
        score += MEDIUM_EFFORT_POINTS;
    }
    score
}

/// Maps the score through the thresholds, then lets an explicit effort dominate.
pub(crate) fn complexity(c: &ComplexityInputs, t: &ComplexityThresholds) -> Complexity {
    let score = complexity_score(c);
    let level = if score >= t.xhigh {
        Complexity::Xhigh
    } else if score >= t.high {
        Complexity::High
    } else if score >= t.medium {
        Complexity::Medium
    } else {
        Complexity::Low
    };
    with_effort(level, c.effort, c.tokens)
}

/// The least level a prompt of `tokens` has by its size alone: High above 8k tokens, Xhigh
/// above 32k ([`SIZE_TIERS`] with the default thresholds).
pub(crate) fn size_floor(tokens: u64) -> Complexity {
    match tier(&SIZE_TIERS, tokens, true) {
        9.. => Complexity::Xhigh,
        5.. => Complexity::High,
        _ => Complexity::Low,
    }
}

/// An explicit reasoning effort dominates the level read from the prompt: `high` makes it at
/// least High, `xhigh` Xhigh, `low`/`minimal`/`none` at most Medium unless the prompt exceeds
/// [`HUGE_PROMPT_TOKENS`].
pub(crate) fn with_effort(level: Complexity, effort: Option<Effort>, tokens: u64) -> Complexity {
    match effort {
        Some(Effort::Xhigh) => Complexity::Xhigh,
        Some(Effort::High) => level.max(Complexity::High),
        Some(Effort::Minimal | Effort::Low) if tokens <= HUGE_PROMPT_TOKENS => {
            level.min(Complexity::Medium)
        }
        _ => level,
    }
}

#[cfg(test)]
mod tests {
    use super::bytes::floor_boundary;
    use super::*;

    fn scan(text: &str) -> TextSignals {
        let mut s = Scanner::new();
        s.scan(text, SCAN_HEAD, SCAN_TAIL);
        s.finish()
    }

    #[test]
    fn words_are_whole_and_case_insensitive() {
        assert_eq!(scan("anywhy nowhy").topic[REASONING], 0);
        assert_eq!(scan("WHY? Why.").topic[REASONING], 2);
        assert_eq!(scan("Summarize").strong[4], 6);
        assert_eq!(scan("summarized").strong[4], 0);
        // Non-ASCII letters glue to the word.
        assert_eq!(scan("éwhy whyé").topic[REASONING], 0);
    }

    #[test]
    fn phrases_span_punctuation() {
        assert_eq!(scan("TL;DR please").strong[4], 6);
        assert_eq!(scan("think step-by-step").strong[REASONING], 4);
        assert_eq!(scan("the trade-offs").strong[REASONING], 3);
        assert_eq!(scan("step by").strong[REASONING], 0);
        assert_eq!(scan("explain your reasoning").strong[REASONING], 4);
    }

    #[test]
    fn structural_code_signals() {
        let s = scan("```rust\nfn main() {\n    println!(\"hi\");\n}\n```");
        // Language fence (4) and one code line (`fn main() {`).
        assert_eq!(s.strong[CODING], 4 + 1, "{s:?}");
        assert_eq!(scan("```json\n{\"a\": 1}\n```").strong[CODING], 0);
        assert_eq!(scan("#include <stdio.h>").strong[CODING], 3);
        assert_eq!(
            scan("For example:\nImport the data (CSV) as follows").strong[CODING],
            0
        );
        assert_eq!(scan("def f(x):\n  return x").strong[CODING], 1);
    }

    #[test]
    fn structural_math_signals() {
        assert_eq!(scan(r"\frac{a}{b}").strong[MATH], 3);
        // Three LaTeX marks (5) and two powers (`_0^1`, `x^2`).
        assert_eq!(scan(r"$$\int_0^1 x^2 dx$$").strong[MATH], 5 + 2);
        assert_eq!(scan("12 * 7 = 84").strong[MATH], 2);
        assert_eq!(scan("12 × 7").strong[MATH], 1);
        assert_eq!(scan("on 2024-01-15 and 01/02/2024").strong[MATH], 0);
        assert_eq!(scan("3.5 + 1.25").strong[MATH], 1);
    }

    #[test]
    fn numbered_lists_and_sequencing() {
        let s = scan("1. do this\n2) do that\n 3. finally that\n10 apples");
        assert_eq!(s.multi_step, 4);
    }

    #[test]
    fn long_text_is_scanned_at_both_ends_only() {
        let mut text = String::from("Summarize ");
        text.push_str(&"blah ".repeat(10_000));
        text.push_str("why é");
        let s = scan(&text);
        assert_eq!(s.strong[4], 6);
        assert_eq!(s.topic[REASONING], 1);
        let middle = format!("{}why{}", "x ".repeat(8_000), " y".repeat(8_000));
        assert_eq!(scan(&middle).topic[REASONING], 0);
    }

    #[test]
    fn floor_boundary_respects_chars() {
        let s = "aé";
        assert_eq!(floor_boundary(s, 2), 1);
        assert_eq!(floor_boundary(s, 9), 3);
    }
}
