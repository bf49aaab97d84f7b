//! The learned classifier: one linear model over hashed words and byte trigrams of the
//! request's last user turn, dense features from the heuristic scan (`heuristics.rs`, of
//! that turn and the system prompt) and the request fields. Trained natively from the
//! labelled sets (`src/bin/llm-router-train.rs`, `make train`); its weights (`model.bin`, i8
//! with a scale per output) are embedded in the `.wasm`. Inference is allocation-free: each
//! feature adds its row of weights as it is found.
//!
//! Rules stay rules: `/v1/embeddings` is `embedding` and an image makes `vision`; the model
//! chooses among the six text tasks and the four complexities; an explicit reasoning effort
//! then clamps the complexity as in `heuristics::complexity`.

use std::hash::Hasher;
use std::sync::OnceLock;

use fnv::FnvHasher;

use super::heuristics::{head_and_tail, Effort, RequestSignals, TextSignals, SCORED};
use super::text::Extracted;
use super::{Complexity, Task};
use crate::endpoint::Endpoint;

/// Hashed feature slots.
pub const BUCKETS: usize = 1 << 14;
// A slot is kept in 16 bits while its row waits to be summed (`RowSums`).
const _: () = assert!(BUCKETS <= 1 << 16);
/// Dense features (see [`dense`]).
pub const DENSE: usize = 64;
/// Rows of weights: one per hashed slot, then one per dense feature.
pub const ROWS: usize = BUCKETS + DENSE;
/// The text tasks the model chooses from, in output order.
pub const TASK_OUT: [Task; 6] = [
    Task::Coding,
    Task::Math,
    Task::Reasoning,
    Task::Extraction,
    Task::Summarization,
    Task::General,
];
/// The complexities, in output order after the tasks.
pub const LEVEL_OUT: [Complexity; 4] = [
    Complexity::Low,
    Complexity::Medium,
    Complexity::High,
    Complexity::Xhigh,
];
/// Outputs: the task scores, then the complexity scores.
pub const OUTPUTS: usize = TASK_OUT.len() + LEVEL_OUT.len();

const MAGIC: &[u8; 8] = b"LLMRCLS1";
/// Words (of the last user turn) that also count as its opening or its close.
const EDGE_WORDS: usize = 16;
/// Bytes of the last user turn's texts the model reads: their opening and their close
/// (where the ask is). The middle of a long pasted document adds cost, not accuracy: leave
/// one author out (`make train-cv`), 192 + 192 bytes score as well as 512 + 512, 768 + 768
/// or all of the 12 KiB the heuristics scan, at a fraction of the time.
const USER_HEAD: usize = 192;
const USER_TAIL: usize = 192;
/// Bytes of each text's opening and close the heuristic scan reads for the model's dense
/// features (`heuristics::SCAN_HEAD`/`SCAN_TAIL` for the heuristic method).
pub const SCAN_EDGES: (usize, usize) = (SCAN_EDGE, SCAN_EDGE);
const SCAN_EDGE: usize = 384;
/// Longest word hashed whole (longer ones by their first bytes).
const MAX_WORD_BYTES: usize = 32;

const SALT_WORD: u8 = 1;
const SALT_HEAD: u8 = 3;
const SALT_TAIL: u8 = 4;
const SALT_PUNCT: u8 = 5;
const SALT_CJK: u8 = 7;
const SALT_CJK_PAIR: u8 = 8;
const SALT_STEM: u8 = 9;
const SALT_TRIGRAM: u8 = 10;
/// Words of the last user turn whose byte trigrams are features too: the opening, where the
/// ask usually is; trigrams tie inflections and compounds of other languages together
/// (`make train-cv`: task accuracy +0.01; the whole turn's trigrams did less and cost more).
const TRIGRAM_WORDS: usize = 24;
/// Bytes of a long word's stem (its start): inflections and spellings share it.
const STEM_BYTES: usize = 5;

/// The embedded weights (empty until `make train` wrote them).
static WEIGHTS: &[u8] = include_bytes!("model.bin");

/// A decoded model; its weights stay where they are (the embedded ones are not copied).
#[derive(Debug)]
pub struct Model<'a> {
    scale: [f32; OUTPUTS],
    bias: [f32; OUTPUTS],
    /// `ROWS × OUTPUTS` i8 weights as bytes, row-major.
    weights: &'a [u8],
}

/// A weight byte's value.
fn weight(b: u8) -> i8 {
    i8::from_ne_bytes([b])
}

impl<'a> Model<'a> {
    /// The embedded model, decoded once; `None` if there is none or it does not fit.
    pub fn embedded() -> Option<&'static Model<'static>> {
        static MODEL: OnceLock<Option<Model<'static>>> = OnceLock::new();
        MODEL.get_or_init(|| Model::decode(WEIGHTS)).as_ref()
    }

    /// Reads the format [`Model::encode`] writes.
    pub fn decode(bytes: &'a [u8]) -> Option<Model<'a>> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (dims, rest) = rest.split_first_chunk::<12>()?;
        let dim = |i: usize| {
            dims.get(i * 4..i * 4 + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        if (dim(0)?, dim(1)?, dim(2)?) != (BUCKETS as u32, DENSE as u32, OUTPUTS as u32) {
            return None;
        }
        let mut scale = [0f32; OUTPUTS];
        let mut bias = [0f32; OUTPUTS];
        let (floats, weights) = rest.split_at_checked(OUTPUTS * 8)?;
        for (i, chunk) in floats.chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes(chunk.try_into().ok()?);
            match i.checked_sub(OUTPUTS) {
                None => *scale.get_mut(i)? = v,
                Some(j) => *bias.get_mut(j)? = v,
            }
        }
        if weights.len() != ROWS * OUTPUTS {
            return None;
        }
        Some(Model {
            scale,
            bias,
            weights,
        })
    }

    /// Quantises `weights` (`ROWS × OUTPUTS`, row-major) and `bias` into the embedded format.
    pub fn encode(weights: &[f32], bias: &[f32; OUTPUTS]) -> Vec<u8> {
        let mut scale = [0f32; OUTPUTS];
        for row in weights.chunks_exact(OUTPUTS) {
            for (s, w) in scale.iter_mut().zip(row) {
                *s = s.max(w.abs() / 127.0);
            }
        }
        let mut out = MAGIC.to_vec();
        for d in [BUCKETS, DENSE, OUTPUTS] {
            out.extend_from_slice(&(d as u32).to_le_bytes());
        }
        for v in scale.iter().chain(bias) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for row in weights.chunks_exact(OUTPUTS) {
            for (w, s) in row.iter().zip(&scale) {
                let q = if *s > 0.0 { (w / s).round() } else { 0.0 };
                out.push(q.clamp(-127.0, 127.0) as i8 as u8);
            }
        }
        out
    }

    /// Task and complexity for the features of one request.
    pub(crate) fn predict(&self, input: &Input<'_>) -> (Task, Complexity) {
        let mut rows = RowSums::new(self.weights);
        let counts = hashed(input, &mut |slot, group| rows.push(slot, group));
        let acc = rows.sums();
        let mut scores = self.bias;
        for (acc, n) in acc.iter().zip(counts) {
            let norm = norm(n);
            for (k, s) in scores.iter_mut().enumerate() {
                *s += acc[k] as f32 * self.scale[k] * norm;
            }
        }
        for (j, x) in dense(input).iter().enumerate() {
            if *x == 0.0 {
                continue;
            }
            let at = (BUCKETS + j) * OUTPUTS;
            if let Some(row) = self.weights.get(at..at + OUTPUTS) {
                for (k, w) in row.iter().enumerate() {
                    scores[k] += f32::from(weight(*w)) * self.scale[k] * x;
                }
            }
        }
        let (tasks, levels) = scores.split_at(TASK_OUT.len());
        let task = TASK_OUT
            .get(argmax(tasks))
            .copied()
            .unwrap_or(Task::General);
        let level = LEVEL_OUT
            .get(argmax(levels))
            .copied()
            .unwrap_or(Complexity::Low);
        (task, level)
    }
}

/// How many slots [`RowSums`] takes before it sums their rows.
const BATCH: usize = 128;

/// The hashed rows of one request summed per group. The slots come in batches and each batch
/// is summed in a loop of loads alone: the rows are scattered lines of a 164 KiB table,
/// mostly out of cache when a request comes, and such a loop keeps several misses in flight
/// where one interleaved with the hashing waited for each (integer sums do not depend on the
/// order). A batch is a fixed array: no allocation.
struct RowSums<'a> {
    weights: &'a [u8],
    acc: [[i32; OUTPUTS]; GROUPS],
    batch: [(u16, u8); BATCH],
    len: usize,
}

impl<'a> RowSums<'a> {
    fn new(weights: &'a [u8]) -> RowSums<'a> {
        RowSums {
            weights,
            acc: [[0; OUTPUTS]; GROUPS],
            batch: [(0, 0); BATCH],
            len: 0,
        }
    }

    /// Takes the slot of a hashed feature (below [`BUCKETS`]) of `group`.
    fn push(&mut self, slot: usize, group: usize) {
        if let (Some(at), Ok(slot), Ok(group)) = (
            self.batch.get_mut(self.len),
            u16::try_from(slot),
            u8::try_from(group),
        ) {
            *at = (slot, group);
            self.len += 1;
        }
        if self.len == BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for &(slot, group) in self.batch.get(..self.len).unwrap_or(&[]) {
            // A fixed-size row: the adds unroll.
            let row = self
                .weights
                .get(usize::from(slot) * OUTPUTS..)
                .and_then(|r| r.first_chunk::<OUTPUTS>());
            if let (Some(row), Some(acc)) = (row, self.acc.get_mut(usize::from(group))) {
                for k in 0..OUTPUTS {
                    acc[k] += i32::from(weight(row[k]));
                }
            }
        }
        self.len = 0;
    }

    fn sums(mut self) -> [[i32; OUTPUTS]; GROUPS] {
        self.flush();
        self.acc
    }
}

/// The index of the largest score (the first of equals).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs.get(best).copied().unwrap_or(f32::MIN) {
            best = i;
        }
    }
    best
}

/// What the features are computed from: everything the heuristics read already.
pub(crate) struct Input<'a> {
    pub ex: &'a Extracted<'a>,
    pub user: &'a TextSignals,
    pub system: &'a TextSignals,
    pub req: &'a RequestSignals,
    pub tokens: u64,
    pub endpoint: Endpoint,
}

/// The hash of a token's bytes (once per token; its features derive from it by [`slot`]).
fn token_hash(bytes: &[u8]) -> u64 {
    let mut h = FnvHasher::default();
    h.write(bytes);
    h.finish()
}

/// The slot of feature `salt` of the token hashes `a` (and `b`, for pairs): a multiply-xorshift
/// mix (SplitMix64's finaliser), so that derived features cost no second pass over the bytes.
fn slot(salt: u8, a: u64, b: u64) -> usize {
    let mut x = a ^ b.rotate_left(29) ^ u64::from(salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % BUCKETS as u64) as usize
}

/// CJK ideographs, kana and Hangul: written without spaces, hashed by character and pair.
fn is_cjk(c: char) -> bool {
    matches!(u32::from(c), 0x3040..=0x30ff | 0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xac00..=0xd7af | 0xf900..=0xfaff)
}

/// A token of the text.
enum Token<'a> {
    /// Lower-cased, digits folded to `0`.
    Word(&'a [u8]),
    /// A CJK character and the one before it, if that was one too.
    Cjk(char, Option<char>),
    /// A run of ASCII punctuation (its first four).
    Punct(&'a [u8]),
}

/// Splits text into [`Token`]s.
struct Words {
    buf: [u8; MAX_WORD_BYTES],
    len: usize,
    punct: [u8; 4],
    punct_len: usize,
}

impl Words {
    fn new() -> Words {
        Words {
            buf: [0; MAX_WORD_BYTES],
            len: 0,
            punct: [0; 4],
            punct_len: 0,
        }
    }

    /// A non-ASCII letter or digit of a word, lower-cased.
    fn push_char(&mut self, c: char) {
        let mut tmp = [0u8; 4];
        for lc in c.to_lowercase() {
            let lc = if lc.is_ascii_digit() { '0' } else { lc };
            let bytes = lc.encode_utf8(&mut tmp).as_bytes();
            if self.len + bytes.len() <= MAX_WORD_BYTES {
                if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
                    dst.copy_from_slice(bytes);
                    self.len += bytes.len();
                }
            }
        }
    }

    fn scan<F: FnMut(Token<'_>)>(&mut self, text: &str, f: &mut F) {
        let bytes = text.as_bytes();
        let mut prev_cjk = None;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            // ASCII, byte by byte: most text is.
            if b.is_ascii() {
                i += 1;
                prev_cjk = None;
                if b.is_ascii_alphanumeric() {
                    self.end_punct(f);
                    let b = if b.is_ascii_digit() {
                        b'0'
                    } else {
                        b.to_ascii_lowercase()
                    };
                    if let Some(dst) = self.buf.get_mut(self.len) {
                        *dst = b;
                        self.len += 1;
                    }
                    continue;
                }
                self.end_word(f);
                if b.is_ascii_punctuation() {
                    self.push_punct(b);
                } else {
                    self.end_punct(f);
                }
                continue;
            }
            let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) else {
                break;
            };
            i += c.len_utf8();
            if c.is_alphanumeric() {
                self.end_punct(f);
                if is_cjk(c) {
                    self.end_word(f);
                    f(Token::Cjk(c, prev_cjk));
                    prev_cjk = Some(c);
                } else {
                    prev_cjk = None;
                    self.push_char(c);
                }
                continue;
            }
            prev_cjk = None;
            self.end_word(f);
            self.end_punct(f);
        }
        self.end_word(f);
        self.end_punct(f);
    }

    fn push_punct(&mut self, b: u8) {
        if let Some(p) = self.punct.get_mut(self.punct_len) {
            *p = b;
            self.punct_len += 1;
        }
    }

    fn end_word<F: FnMut(Token<'_>)>(&mut self, f: &mut F) {
        if self.len > 0 {
            f(Token::Word(self.buf.get(..self.len).unwrap_or(&[])));
            self.len = 0;
        }
    }

    fn end_punct<F: FnMut(Token<'_>)>(&mut self, f: &mut F) {
        if self.punct_len > 0 {
            f(Token::Punct(
                self.punct.get(..self.punct_len).unwrap_or(&[]),
            ));
            self.punct_len = 0;
        }
    }
}

/// The hash of a word and, for a word longer than [`STEM_BYTES`], of its stem (its first
/// bytes, cut back to a char boundary).
fn word_hashes(w: &[u8]) -> (u64, Option<u64>) {
    if w.len() <= STEM_BYTES {
        return (token_hash(w), None);
    }
    let mut end = STEM_BYTES;
    // A UTF-8 continuation byte is 0b10xx_xxxx.
    while end > 0 && w.get(end).is_some_and(|b| b & 0xc0 == 0x80) {
        end -= 1;
    }
    // FNV-1a reads bytes in order: the stem's hash is the word's, part way through.
    let (stem, rest) = w.split_at_checked(end).unwrap_or((w, &[]));
    let mut h = FnvHasher::default();
    h.write(stem);
    let stem_hash = h.finish();
    h.write(rest);
    (h.finish(), Some(stem_hash))
}

/// Groups of hashed features, each scaled by `1/sqrt(its count)`: the words of the whole
/// text, those of its opening and close (where the instruction sits, so that a long
/// pasted document does not drown it), and the byte trigrams of the opening's words.
pub const GROUPS: usize = 3;
const BODY: usize = 0;
const EDGE: usize = 1;
const TRIGRAMS: usize = 2;

/// The scale of a group of `n` hashed features.
pub fn norm(n: usize) -> f32 {
    1.0 / (n.max(1) as f32).sqrt()
}

/// Calls `f` with the slot and group of every hashed feature of the request; returns how
/// many each group has.
pub(crate) fn hashed<F: FnMut(usize, usize)>(input: &Input<'_>, f: &mut F) -> [usize; GROUPS] {
    let mut n = [0usize; GROUPS];
    let mut emit = |s: usize, group: usize| {
        if let Some(c) = n.get_mut(group) {
            *c += 1;
        }
        f(s, group);
    };
    let mut seen = 0usize;
    let mut tail = [0u64; EDGE_WORDS];
    let mut words = Words::new();
    for text in input.ex.last_user_texts() {
        for part in head_and_tail(text, USER_HEAD, USER_TAIL) {
            words.scan(part, &mut |token| match token {
                Token::Word(w) => {
                    let (h, stem) = word_hashes(w);
                    if seen < TRIGRAM_WORDS && w.len() > 3 {
                        for g in w.windows(3) {
                            emit(slot(SALT_TRIGRAM, token_hash(g), 0), TRIGRAMS);
                        }
                    }
                    emit(slot(SALT_WORD, h, 0), BODY);
                    if let Some(stem) = stem {
                        emit(slot(SALT_STEM, stem, 0), BODY);
                    }
                    if seen < EDGE_WORDS {
                        emit(slot(SALT_HEAD, h, 0), EDGE);
                    }
                    if let Some(t) = tail.get_mut(seen % EDGE_WORDS) {
                        *t = h;
                    }
                    seen += 1;
                }
                Token::Cjk(c, before) => {
                    let h = u64::from(c);
                    emit(slot(SALT_CJK, h, 0), BODY);
                    if let Some(p) = before {
                        emit(slot(SALT_CJK_PAIR, u64::from(p), h), BODY);
                    }
                }
                Token::Punct(p) => emit(slot(SALT_PUNCT, token_hash(p), 0), BODY),
            });
        }
    }
    for h in tail.iter().take(seen.min(EDGE_WORDS)) {
        emit(slot(SALT_TAIL, *h, 0), EDGE);
    }
    n
}

fn capped(x: u32, cap: u32) -> f32 {
    x.min(cap) as f32 / cap as f32
}

/// The dense features: heuristic points per task (last user turn, system prompt), multi-step
/// and rigor markers, size, depth and request-field one-hots, the turn's shape.
pub(crate) fn dense(input: &Input<'_>) -> [f32; DENSE] {
    let mut d = [0f32; DENSE];
    let mut set = |i: usize, v: f32| {
        if let Some(x) = d.get_mut(i) {
            *x = v;
        }
    };
    set(0, 1.0);
    for t in 0..SCORED.len() {
        set(1 + t, capped(input.user.points(t), 16) * 2.0);
        set(6 + t, capped(input.system.points(t), 16) * 2.0);
    }
    set(11, capped(input.user.multi_step, 8));
    set(12, capped(input.user.rigor, 4));
    set(13, capped(input.system.multi_step, 8));
    set(14, capped(input.system.rigor, 4));
    let size = [30u64, 100, 300, 1_000, 3_000, 10_000]
        .iter()
        .position(|&limit| input.tokens <= limit)
        .unwrap_or(6);
    set(15 + size, 1.0);
    let turns = match input.ex.turns {
        0 | 1 => 0,
        2..=5 => 1,
        _ => 2,
    };
    set(22 + turns, 1.0);
    let req = input.req;
    set(25, f32::from(u8::from(req.has_tools)));
    set(26, f32::from(u8::from(req.structured_output)));
    set(27, f32::from(u8::from(req.tool_choice_forced)));
    let effort = match req.effort {
        None => 0,
        Some(Effort::Minimal) => 1,
        Some(Effort::Low) => 2,
        Some(Effort::Medium) => 3,
        Some(Effort::High) => 4,
        Some(Effort::Xhigh) => 5,
    };
    set(28 + effort, 1.0);
    let out = match req.max_output_tokens {
        0 => 0,
        1..=4_096 => 1,
        4_097..=16_384 => 2,
        _ => 3,
    };
    set(34 + out, 1.0);
    let endpoint = match input.endpoint {
        Endpoint::ChatCompletions => 0,
        Endpoint::Completions => 1,
        Endpoint::Responses => 2,
        Endpoint::Embeddings => 3,
        Endpoint::AnthropicMessages => 4,
    };
    set(38 + endpoint, 1.0);
    set(43, f32::from(u8::from(input.ex.images > 0)));
    let st = &input.user.shape;
    set(44, capped(st.questions, 4));
    set(45, (1.0 + st.bytes as f32).ln() / 10.0);
    set(46, (1.0 + st.lines as f32).ln() / 5.0);
    set(47, f32::from(u8::from(st.code_lang_fence)));
    set(48, f32::from(u8::from(st.plain_fence && !st.data_fence)));
    set(49, f32::from(u8::from(st.data_fence)));
    set(50, f32::from(u8::from(st.include)));
    set(51, capped(st.code_punct, 8));
    set(52, capped(st.code_lines, 6));
    let lines = st.lines.max(1);
    set(53, (st.code_lines as f32 / lines as f32).min(1.0));
    set(
        54,
        (st.braces_semis as f32 * 50.0 / st.bytes.max(1) as f32).min(2.0),
    );
    set(55, capped(st.latex, 4));
    set(56, capped(st.math_ops, 4));
    set(57, capped(st.numbered, 6));
    d
}

/// The features of one request as the trainer sees them: hashed slots with their values
/// (repeated as often as they occur) and the dense vector.
pub(crate) fn features(input: &Input<'_>) -> (Vec<(u32, f32)>, [f32; DENSE]) {
    let mut slots = Vec::new();
    let counts = hashed(input, &mut |s, group| slots.push((s as u32, group)));
    let slots = slots
        .into_iter()
        .map(|(s, g)| (s, norm(counts.get(g).copied().unwrap_or(1))))
        .collect();
    (slots, dense(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_survives_its_encoding() {
        let mut weights = vec![0f32; ROWS * OUTPUTS];
        weights[3] = 2.0;
        weights[(BUCKETS + 1) * OUTPUTS + 7] = -0.5;
        let bias = [0.25; OUTPUTS];
        let bytes = Model::encode(&weights, &bias);
        let m = Model::decode(&bytes).unwrap();
        assert_eq!(m.bias, bias);
        assert_eq!(weight(m.weights[3]), 127);
        assert_eq!(weight(m.weights[(BUCKETS + 1) * OUTPUTS + 7]), -127);
        assert!(Model::decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(Model::decode(b"LLMRCLS1").is_none());
    }

    #[test]
    fn rows_summed_in_batches_are_the_rows_summed_one_by_one() {
        let model = Model::embedded().unwrap();
        let slots: Vec<(usize, usize)> = (0..3 * BATCH + 7)
            .map(|i| (i * 7919 % BUCKETS, i % GROUPS))
            .collect();
        let mut rows = RowSums::new(model.weights);
        let mut want = [[0i32; OUTPUTS]; GROUPS];
        for &(slot, group) in &slots {
            rows.push(slot, group);
            let row = &model.weights[slot * OUTPUTS..(slot + 1) * OUTPUTS];
            for (sum, w) in want[group].iter_mut().zip(row) {
                *sum += i32::from(weight(*w));
            }
        }
        assert_eq!(rows.sums(), want);
        assert_ne!(want, [[0; OUTPUTS]; GROUPS]);
    }

    #[test]
    fn words_fold_case_and_digits_and_cjk_goes_by_character() {
        let mut words = Words::new();
        let mut seen = Vec::new();
        let mut cjk = Vec::new();
        let mut punct = Vec::new();
        words.scan("Sum 48 and ÉTÉ? 总结一下 fn(x)->y", &mut |t| match t {
            Token::Word(w) => seen.push(String::from_utf8_lossy(w).into_owned()),
            Token::Cjk(c, p) => cjk.push((c, p)),
            Token::Punct(p) => punct.push(String::from_utf8_lossy(p).into_owned()),
        });
        assert_eq!(seen, ["sum", "00", "and", "été", "fn", "x", "y"]);
        assert_eq!(cjk.len(), 4);
        assert_eq!(cjk[1], ('结', Some('总')));
        assert_eq!(punct, ["?", "(", ")->"]);
    }

    #[test]
    fn the_middle_of_a_long_turn_is_not_read() {
        use crate::classify::ClassifierPlan;
        let turn = |middle: &str| {
            let text = format!(
                "Please summarize the report below.\n{}{}{}\nThanks, keep it short?",
                "intro words here. ".repeat(80),
                middle.repeat(200),
                " closing words here.".repeat(80)
            );
            serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": text}]})
        };
        let a = ClassifierPlan::features(&turn("prove the theorem; "), Endpoint::ChatCompletions);
        let b = ClassifierPlan::features(&turn("write some python; "), Endpoint::ChatCompletions);
        assert_eq!(a, b);
        // The words of the opening and the close are read: changing them changes the features.
        let short = serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "Please summarize"}]});
        assert_ne!(
            a.0,
            ClassifierPlan::features(&short, Endpoint::ChatCompletions).0
        );
    }

    #[test]
    fn the_scan_counts_lines_and_questions_for_the_model() {
        let mut scan = super::super::heuristics::Scanner::new();
        scan.scan("why?\nand how？\nok", 1024, 1024);
        let shape = scan.finish().shape;
        assert_eq!((shape.lines, shape.questions), (3, 2));
    }
}
