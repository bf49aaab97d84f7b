//! The cheap heuristics: one pass over the scanned text collecting signals,
//! the request-level signals, and the rules that turn them into a task and a
//! complexity.
//!
//! # Task
//!
//! Each scored task ([`SCORED`], which is also the tie-break order) gets
//! points from its word lists (`lexicon.rs`: strong words uncapped, topic words
//! capped at [`TOPIC_CAP`]) plus structural evidence:
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

use super::lexicon::{load8, Col, Lexicon, DATA_FENCE_LANGS, LATEX_COMMANDS, TOPIC_CAP};
pub(crate) use super::request_fields::{Effort, RequestSignals};
use super::{Complexity, ComplexityThresholds, Task};

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

/// Task and complexity evidence of one role group (the last user message, or
/// the system prompt).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TextSignals {
    pub strong: [u32; 5],
    pub topic: [u32; 5],
    pub multi_step: u32,
    pub rigor: u32,
    /// The structural evidence behind the points (features of the learned model).
    pub shape: Structure,
}

/// What the text looks like, counted by the scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Structure {
    pub code_lang_fence: bool,
    pub plain_fence: bool,
    pub data_fence: bool,
    pub include: bool,
    pub code_punct: u32,
    pub braces_semis: u32,
    pub code_lines: u32,
    pub latex: u32,
    pub math_ops: u32,
    pub numbered: u32,
    /// Lines (newlines + 1 per scanned part) and question marks (also fullwidth).
    pub lines: u32,
    pub questions: u32,
    pub bytes: usize,
}

impl TextSignals {
    pub(crate) fn points(&self, task: usize) -> u32 {
        let strong = self.strong.get(task).copied().unwrap_or(0);
        let topic = self.topic.get(task).copied().unwrap_or(0);
        strong.saturating_add(topic.min(TOPIC_CAP))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumState {
    None,
    /// Just after a number (spaces allowed).
    Num,
    /// After `number operator` (spaces allowed).
    NumOp,
}

/// Accumulates signals over the texts of one role group.
pub(crate) struct Scanner {
    lex: &'static Lexicon,
    sig: TextSignals,
    code_lang_fence: bool,
    plain_fence: bool,
    data_fence: bool,
    include: bool,
    code_punct: u32,
    braces_semis: u32,
    code_lines: u32,
    latex: u32,
    math_ops: u32,
    numbered: u32,
    lines: u32,
    questions: u32,
    bytes: usize,
}

#[inline]
const fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Byte classes of the scan loop: everything else is [`PUNCT`].
const PUNCT: u8 = 0;
/// ASCII letter or `_`.
const ALPHA: u8 = 1;
/// ASCII digit.
const DIGIT: u8 = 2;
/// A byte of a non-ASCII char.
const HIGH: u8 = 3;
/// `' '`, `'\t'`, `'\r'`.
const SPACE: u8 = 4;
const NEWLINE: u8 = 5;

static CLASS: [u8; 256] = {
    let mut t = [PUNCT; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b >= 0x80 {
            HIGH
        } else if b.is_ascii_alphabetic() || b == b'_' {
            ALPHA
        } else if b.is_ascii_digit() {
            DIGIT
        } else if b == b' ' || b == b'\t' || b == b'\r' {
            SPACE
        } else if b == b'\n' {
            NEWLINE
        } else {
            PUNCT
        };
        c += 1;
    }
    t
};

#[inline(always)]
fn class(c: u8) -> u8 {
    // A u8 always indexes a 256-entry table.
    CLASS[usize::from(c)]
}

/// `0x01` in every byte.
const ONES: u64 = u64::from_le_bytes([1; 8]);
/// `0x80` in every byte.
const HIGHS: u64 = ONES * 0x80;

/// The high bit of each byte of `v` (8 text bytes) that is an ASCII letter,
/// digit or `_`; the others clear. Byte-wise range tests on the low seven
/// bits (which cannot carry between bytes), then non-ASCII bytes dropped.
#[inline(always)]
fn word_bytes(v: u64) -> u64 {
    let x = v & !HIGHS;
    // x >= lo sets the high bit of x + (0x80 - lo); x > hi that of x + (0x7f - hi).
    let lower = x | (ONES * 0x20);
    let alpha = (lower + ONES * (0x80 - 0x61)) & !(lower + ONES * (0x7f - 0x7a));
    let digit = (x + ONES * (0x80 - 0x30)) & !(x + ONES * (0x7f - 0x39));
    let underscore = !((x ^ (ONES * 0x5f)) + ONES * 0x7f);
    (alpha | digit | underscore) & !v & HIGHS
}

/// Length of the run of ASCII word bytes at `b[i..]`, eight bytes at a time
/// (no branch per byte: word lengths are unpredictable). The zero padding of
/// [`load8`] ends every run.
#[inline(always)]
fn word_run(b: &[u8], i: usize) -> usize {
    let mut n = 0;
    loop {
        let stop = !word_bytes(load8(b, i + n)) & HIGHS;
        if stop != 0 {
            return n + (stop.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
}

#[inline]
fn byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// Largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// All of `text`, or its first `head` and last `tail` bytes (cut at char boundaries).
pub(crate) fn head_and_tail(text: &str, head: usize, tail: usize) -> [&str; 2] {
    if text.len() <= head + tail {
        return [text, ""];
    }
    let head = floor_boundary(text, head);
    let tail = floor_boundary(text, text.len() - tail);
    [
        text.get(..head).unwrap_or(""),
        text.get(tail..).unwrap_or(""),
    ]
}

/// State of the current line, for code-line detection.
#[derive(Default)]
struct Line {
    starter: bool,
    code_punct: bool,
    paren: bool,
    last: u8,
}

impl Scanner {
    pub(crate) fn new() -> Scanner {
        Scanner {
            lex: Lexicon::get(),
            sig: TextSignals::default(),
            code_lang_fence: false,
            plain_fence: false,
            data_fence: false,
            include: false,
            code_punct: 0,
            braces_semis: 0,
            code_lines: 0,
            latex: 0,
            math_ops: 0,
            numbered: 0,
            lines: 0,
            questions: 0,
            bytes: 0,
        }
    }

    /// Scans `text`, or its first `head` and last `tail` bytes if it is long.
    pub(crate) fn scan(&mut self, text: &str, head: usize, tail: usize) {
        for part in head_and_tail(text, head, tail) {
            if part.is_empty() {
                continue;
            }
            self.scan_slice(part);
        }
    }

    fn end_line(&mut self, line: &mut Line) {
        self.lines += 1;
        if line.starter && (line.code_punct || (line.paren && line.last == b':')) {
            self.code_lines += 1;
        }
        *line = Line::default();
    }

    fn scan_slice(&mut self, text: &str) {
        let b = text.as_bytes();
        let n = b.len();
        self.bytes += n;
        // Ids of the last words, the latest in the low 16 bits (see `Phrase`).
        let mut hist = 0u64;
        let mut i = 0;
        let mut line_start = true;
        let mut line = Line::default();
        let mut num = NumState::None;
        let mut prev_space = true;
        let lex = self.lex;
        while let Some(&c) = b.get(i) {
            let cls = class(c);
            if cls == ALPHA {
                if let Some((next, space)) =
                    self.ascii_words(b, i, &mut hist, line_start, &mut line)
                {
                    i = next;
                    prev_space = space;
                    num = NumState::None;
                    line_start = false;
                    line.last = 0;
                    continue;
                }
            }
            match cls {
                SPACE => {
                    i += 1;
                    prev_space = true;
                    continue;
                }
                NEWLINE => {
                    i += 1;
                    self.end_line(&mut line);
                    line_start = true;
                    num = NumState::None;
                    prev_space = true;
                    continue;
                }
                ALPHA | DIGIT | HIGH => {}
                _ => {
                    i = self.punct(b, i, c, &mut num, prev_space, &mut line);
                    line_start = false;
                    prev_space = false;
                    continue;
                }
            }
            // A token: a maximal run of ASCII word bytes and non-ASCII
            // letters or digits.
            let start = i;
            i += word_run(b, i);
            let mut ascii = true;
            while byte(b, i) >= 0x80 {
                match text.get(i..).and_then(|s| s.chars().next()) {
                    Some(ch) if ch.is_alphanumeric() => {
                        ascii = false;
                        i += ch.len_utf8();
                        i += word_run(b, i);
                    }
                    _ => break,
                }
            }
            if i == start {
                // A non-ASCII symbol, punctuation or emoji.
                let ch = text.get(i..).and_then(|s| s.chars().next());
                i += ch.map_or(1, char::len_utf8);
                match ch {
                    Some('∫' | '∑' | '√' | '∂' | '∞' | '≤' | '≥' | '≠') => {
                        self.latex += 1
                    }
                    Some('？') => self.questions += 1,
                    Some('×' | '÷') if num == NumState::Num => {
                        num = NumState::NumOp;
                        line_start = false;
                        prev_space = false;
                        continue;
                    }
                    _ => {}
                }
                num = NumState::None;
                line_start = false;
                prev_space = false;
                continue;
            }
            let len = i - start;
            if byte(b, start).is_ascii_digit() {
                if num == NumState::NumOp {
                    self.math_ops += 1;
                }
                num = NumState::Num;
                if line_start
                    && len <= 3
                    && b.get(start..i)
                        .is_some_and(|w| w.iter().all(u8::is_ascii_digit))
                    && matches!(byte(b, i), b'.' | b')')
                    && matches!(byte(b, i + 1), b' ' | b'\t')
                {
                    self.numbered += 1;
                }
                hist <<= 16;
            } else {
                num = NumState::None;
                let id = match lex.lookup_at(b, start, len) {
                    Some(id) if ascii => self.word(id, hist, line_start, &mut line),
                    _ => 0,
                };
                hist = hist << 16 | u64::from(id);
            }
            line_start = false;
            line.last = 0;
            // The common single space between words, without a dispatch.
            prev_space = byte(b, i) == b' ';
            i += usize::from(prev_space);
        }
        self.end_line(&mut line);
    }

    /// The fast path of the scan: a run of ASCII words starting with a letter
    /// or `_` (the one at `b[i]` first) separated by single spaces. Returns
    /// where the scan goes on and whether a space was just passed, or `None`
    /// if the word at `i` is followed by a non-ASCII char (the general token
    /// path handles it).
    #[inline(never)]
    fn ascii_words(
        &mut self,
        b: &[u8],
        i: usize,
        hist: &mut u64,
        mut line_start: bool,
        line: &mut Line,
    ) -> Option<(usize, bool)> {
        let lex = self.lex;
        let mut start = i;
        loop {
            let end = start + word_run(b, start);
            let after = byte(b, end);
            if after >= 0x80 {
                return (start != i).then_some((start, true));
            }
            let id = match lex.lookup_at(b, start, end - start) {
                Some(id) => self.word(id, *hist, line_start, line),
                None => 0,
            };
            *hist = *hist << 16 | u64::from(id);
            line_start = false;
            if after != b' ' {
                return Some((end, false));
            }
            start = end + 1;
            if class(byte(b, start)) != ALPHA {
                return Some((start, true));
            }
        }
    }

    /// Handles the ASCII punctuation byte `c` at `b[i]`; returns where the
    /// scan goes on.
    fn punct(
        &mut self,
        b: &[u8],
        mut i: usize,
        c: u8,
        num: &mut NumState,
        prev_space: bool,
        line: &mut Line,
    ) -> usize {
        i += 1;
        line.last = c;
        let next = byte(b, i);
        let mut keep_num = false;
        match c {
            b'`' if next == b'`' && byte(b, i + 1) == b'`' => {
                i += 2;
                while byte(b, i) == b'`' {
                    i += 1;
                }
                let info_start = i;
                while matches!(byte(b, i), b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'+' | b'#' | b'-' | b'_')
                {
                    i += 1;
                }
                let info = b.get(info_start..i).unwrap_or(&[]);
                if info.is_empty() {
                    self.plain_fence = true;
                } else if DATA_FENCE_LANGS
                    .iter()
                    .any(|l| l.as_bytes().eq_ignore_ascii_case(info))
                {
                    self.data_fence = true;
                } else {
                    self.code_lang_fence = true;
                }
            }
            b'#' => {
                let rest = b.get(i..).unwrap_or(&[]);
                if rest.starts_with(b"include")
                    || rest.starts_with(b"define")
                    || (i == 1 && next == b'!')
                {
                    self.include = true;
                }
            }
            b'\\' => {
                let start = i;
                while byte(b, i).is_ascii_alphabetic() {
                    i += 1;
                }
                let cmd = b.get(start..i).unwrap_or(&[]);
                if (cmd.is_empty() && matches!(next, b'(' | b'['))
                    || LATEX_COMMANDS.iter().any(|l| l.as_bytes() == cmd)
                {
                    self.latex += 1;
                }
            }
            b'$' if next == b'$' => {
                self.latex += 1;
                i += 1;
            }
            b'{' | b'}' => {
                self.braces_semis += 1;
                line.code_punct = true;
            }
            b';' => {
                line.code_punct = true;
                if matches!(next, b'\n' | b'\r' | 0) {
                    self.braces_semis += 1;
                }
            }
            b'(' => line.paren = true,
            b'?' => self.questions += 1,
            b'^' if next.is_ascii_digit() && i >= 2 && is_word_byte(byte(b, i - 2)) => {
                self.math_ops += 1;
            }
            b'.' | b',' if *num == NumState::Num && next.is_ascii_digit() => keep_num = true,
            _ => {}
        }
        match (c, next) {
            (b'=', b'>' | b'=')
            | (b')', b';')
            | (b'!', b'=')
            | (b'&', b'&')
            | (b'|', b'|')
            | (b':', b':')
            | (b'-', b'>')
            | (b'+', b'=' | b'+') => {
                self.code_punct += 1;
                if c != b')' {
                    i += 1;
                }
            }
            _ => {}
        }
        if c == b'=' {
            line.code_punct = true;
        }
        let op = match c {
            b'+' | b'*' | b'=' => *num == NumState::Num,
            b'-' | b'/' => *num == NumState::Num && prev_space && matches!(next, b' ' | b'\t'),
            _ => false,
        };
        if op {
            *num = NumState::NumOp;
        } else if !keep_num {
            *num = NumState::None;
        }
        i
    }

    /// Applies the lexicon word `id`, found after the words of `hist`;
    /// returns `id`.
    #[inline(never)]
    fn word(&mut self, id: u16, hist: u64, line_start: bool, line: &mut Line) -> u16 {
        let lex = self.lex;
        let Some(info) = lex.words.get(usize::from(id)) else {
            return 0;
        };
        for &(col, weight) in &info.signals {
            if col == Col::CodeLineStarter {
                if line_start {
                    line.starter = true;
                }
            } else {
                self.add(col, weight);
            }
        }
        for &pid in &info.phrase_ends {
            let Some(phrase) = lex.phrases.get(usize::from(pid)) else {
                continue;
            };
            if phrase
                .before
                .is_some_and(|(want, mask)| hist & mask == want)
            {
                for &(col, weight) in &phrase.signals {
                    self.add(col, weight);
                }
            }
        }
        id
    }

    fn add(&mut self, col: Col, weight: u8) {
        let w = u32::from(weight);
        let slot = match col {
            Col::Strong(t) => self.sig.strong.get_mut(usize::from(t)),
            Col::Topic(t) => self.sig.topic.get_mut(usize::from(t)),
            Col::MultiStep => Some(&mut self.sig.multi_step),
            Col::Rigor => Some(&mut self.sig.rigor),
            Col::CodeLineStarter => None,
        };
        if let Some(slot) = slot {
            *slot = slot.saturating_add(w);
        }
    }

    /// The signals of everything scanned, structural evidence included.
    pub(crate) fn finish(self) -> TextSignals {
        let mut sig = self.sig;
        let mut coding = 0;
        if self.code_lang_fence {
            coding += 4;
        } else if self.plain_fence && !self.data_fence {
            coding += 3;
        }
        if self.include {
            coding += 3;
        }
        coding += self.code_punct.min(6) / 2;
        if self.braces_semis >= 4 && (self.braces_semis as usize).saturating_mul(50) >= self.bytes {
            coding += 2;
        }
        coding += self.code_lines.min(4);
        let mut math = match self.latex {
            0 => 0,
            1 | 2 => 3,
            _ => 5,
        };
        math += self.math_ops.min(3);
        if let Some(s) = sig.strong.get_mut(CODING) {
            *s = s.saturating_add(coding);
        }
        if let Some(s) = sig.strong.get_mut(MATH) {
            *s = s.saturating_add(math);
        }
        sig.multi_step = sig.multi_step.saturating_add(self.numbered);
        sig.shape = Structure {
            code_lang_fence: self.code_lang_fence,
            plain_fence: self.plain_fence,
            data_fence: self.data_fence,
            include: self.include,
            code_punct: self.code_punct,
            braces_semis: self.braces_semis,
            code_lines: self.code_lines,
            latex: self.latex,
            math_ops: self.math_ops,
            numbered: self.numbered,
            lines: self.lines,
            questions: self.questions,
            bytes: self.bytes,
        };
        sig
    }
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
