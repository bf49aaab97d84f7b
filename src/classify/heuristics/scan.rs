//! The one pass over a text that collects its signals ([`TextSignals`]): lexicon words and
//! phrases (through `lexicon.rs`), and the structural evidence of code and math (fences,
//! `#include`, LaTeX, braces and semicolons, code punctuation and lines, arithmetic,
//! numbered lists). The scoring of those signals is in the parent, `heuristics.rs`.

use super::bytes::{
    byte, class, head_and_tail, is_word_byte, word_run, ALPHA, DIGIT, HIGH, NEWLINE, SPACE,
};
use super::{CODING, MATH};
use crate::classify::lexicon::{Col, Lexicon, DATA_FENCE_LANGS, LATEX_COMMANDS, TOPIC_CAP};

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
