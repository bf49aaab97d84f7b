//! Span edits of a JSON object body: the upstream gets the client's bytes with only the
//! changed members replaced.
//!
//! The body is never re-serialised: key order, number formatting, whitespace and escapes of
//! every member that is not edited stay exactly as the client sent them. A single pass over
//! the bytes finds the top-level members (strings are skipped a machine word at a time), and
//! the output is then assembled with one allocation of the exact final size.
//!
//! The scanner checks the structure it relies on (string boundaries, escaped quotes, control
//! characters, bracket nesting, the top-level `{ "key": value, ... }` grammar, top-level
//! scalars) and reports anything else as an [`EditError`]; it never panics. It does not
//! re-check UTF-8, escape sequences inside values or the grammar inside nested values: the
//! body has already been validated with serde_json, and none of these can move a member's
//! boundaries. Member names containing escapes are decoded (and so checked) with serde_json
//! when they have to be compared.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError(pub String);

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot edit JSON body: {}", self.0)
    }
}

impl std::error::Error for EditError {}

/// Sets top-level members (`set`: key and raw JSON text of the new value) and removes
/// top-level members (`remove`), leaving every other byte as it was.
///
/// * Every top-level member whose (decoded) key is in `set` gets its value replaced by the
///   raw text; a key that is absent is inserted as the first member, right after `{`.
///   When a key appears more than once in `set`, the last entry wins.
/// * Every top-level member whose key is in `remove` is dropped together with one adjacent
///   comma. A key in both lists is removed (and not inserted).
/// * Nested objects are never touched.
///
/// Returns a copy of `body` when there is nothing to change.
///
/// # Errors
///
/// [`EditError`] when `body` is not a JSON object (surrounding whitespace allowed), or a raw
/// value in `set` is not a JSON text, or a member name that must be compared has a bad
/// escape.
pub fn edit_object(
    body: &[u8],
    set: &[(&str, &str)],
    remove: &[&str],
) -> Result<Vec<u8>, EditError> {
    for (key, raw) in set {
        if serde_json::from_str::<serde::de::IgnoredAny>(raw).is_err() {
            return Err(EditError(format!(
                "new value for {} is not valid JSON",
                json_string(key)
            )));
        }
    }

    let members = scan_object(body, set, remove)?;
    let open = members.open;
    let members = members.members;

    // Set entries already applied in place (indexed like `set`).
    let mut found = vec![false; set.len()];
    for m in &members {
        if let Action::Set(j) = m.action {
            if let Some(f) = found.get_mut(j) {
                *f = true;
            }
        }
    }
    let last_kept = members.iter().rposition(|m| m.action != Action::Remove);

    // Members to insert, in the order of `set`, joined by commas.
    let mut inserted = String::new();
    for (j, (key, raw)) in set.iter().enumerate() {
        let applied = found.get(j).copied().unwrap_or(false);
        let superseded = set
            .get(j + 1..)
            .unwrap_or_default()
            .iter()
            .any(|(k, _)| k == key);
        if applied || superseded || remove.contains(key) {
            continue;
        }
        if !inserted.is_empty() {
            inserted.push(',');
        }
        inserted.push_str(&json_string(key));
        inserted.push(':');
        inserted.push_str(raw);
    }
    if !inserted.is_empty() && last_kept.is_some() {
        inserted.push(',');
    }

    // Non-overlapping edits in ascending order: replace `start..end` with `text`.
    let mut edits: Vec<(usize, usize, &[u8])> = Vec::new();
    if !inserted.is_empty() {
        edits.push((open + 1, open + 1, inserted.as_bytes()));
    }
    match last_kept {
        None => {
            // Every member goes: drop everything from the first key to the last value.
            if let (Some(first), Some(last)) = (members.first(), members.last()) {
                edits.push((first.key_start, last.value_end, b""));
            }
        }
        Some(last_kept) => {
            for (i, m) in members.iter().enumerate() {
                match m.action {
                    Action::Keep => {}
                    Action::Set(j) => {
                        let raw = set
                            .get(j)
                            .map(|(_, raw)| raw.as_bytes())
                            .unwrap_or_default();
                        edits.push((m.value_start, m.value_end, raw));
                    }
                    Action::Remove if i < last_kept => {
                        // A kept member follows: drop this member, its comma and the
                        // whitespace up to the next key.
                        let Some(next) = members.get(i + 1) else {
                            return Err(EditError("internal: missing next member".into()));
                        };
                        edits.push((m.key_start, next.key_start, b""));
                    }
                    Action::Remove => {
                        // Trailing run of removed members: drop from the end of the
                        // previous value, taking the comma before this member.
                        let Some(prev) = i.checked_sub(1).and_then(|p| members.get(p)) else {
                            return Err(EditError("internal: missing previous member".into()));
                        };
                        edits.push((prev.value_end, m.value_end, b""));
                    }
                }
            }
        }
    }

    if edits.is_empty() {
        return Ok(body.to_vec());
    }
    apply_edits(body, &edits)
}

/// The JSON text of a string value, quotes included.
pub fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn apply_edits(body: &[u8], edits: &[(usize, usize, &[u8])]) -> Result<Vec<u8>, EditError> {
    let mut len = body.len();
    for (start, end, text) in edits {
        len = len.saturating_sub(end.saturating_sub(*start)) + text.len();
    }
    let mut out = Vec::with_capacity(len);
    let mut cursor = 0usize;
    for &(start, end, text) in edits {
        let (Some(kept), true) = (body.get(cursor..start), start <= end) else {
            return Err(EditError("internal: overlapping edits".into()));
        };
        out.extend_from_slice(kept);
        out.extend_from_slice(text);
        cursor = end;
    }
    out.extend_from_slice(body.get(cursor..).unwrap_or_default());
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Keep,
    /// Replace the value with `set[index]`.
    Set(usize),
    Remove,
}

/// One top-level member: `"key"` starts at `key_start`, the value spans
/// `value_start..value_end`.
#[derive(Debug, Clone, Copy)]
struct Member {
    key_start: usize,
    value_start: usize,
    value_end: usize,
    action: Action,
}

struct Object {
    /// Position of the top-level `{`.
    open: usize,
    members: Vec<Member>,
}

fn scan_object(body: &[u8], set: &[(&str, &str)], remove: &[&str]) -> Result<Object, EditError> {
    let mut s = Scanner {
        b: body,
        pos: 0,
        stack: Vec::new(),
    };
    s.skip_ws();
    let open = s.pos;
    if s.peek() != Some(b'{') {
        return s.fail("expected `{` (the body must be a JSON object)");
    }
    s.pos += 1;
    let mut members = Vec::new();
    s.skip_ws();
    if s.peek() == Some(b'}') {
        s.pos += 1;
    } else {
        loop {
            let key_start = s.pos;
            if s.peek() != Some(b'"') {
                return s.fail("expected a member name");
            }
            s.string()?;
            let raw_key = body.get(key_start..s.pos).unwrap_or_default();
            let action = classify(raw_key, set, remove)?;
            s.skip_ws();
            if s.peek() != Some(b':') {
                return s.fail("expected `:`");
            }
            s.pos += 1;
            s.skip_ws();
            let value_start = s.pos;
            s.value()?;
            members.push(Member {
                key_start,
                value_start,
                value_end: s.pos,
                action,
            });
            s.skip_ws();
            match s.peek() {
                Some(b',') => {
                    s.pos += 1;
                    s.skip_ws();
                }
                Some(b'}') => {
                    s.pos += 1;
                    break;
                }
                _ => return s.fail("expected `,` or `}`"),
            }
        }
    }
    s.skip_ws();
    if s.pos != body.len() {
        return s.fail("unexpected data after the object");
    }
    Ok(Object { open, members })
}

/// What to do with a member whose key text (quotes included) is `raw_key`.
fn classify(raw_key: &[u8], set: &[(&str, &str)], remove: &[&str]) -> Result<Action, EditError> {
    if set.is_empty() && remove.is_empty() {
        return Ok(Action::Keep);
    }
    let decoded;
    let key: &[u8] = if raw_key.contains(&b'\\') {
        decoded = serde_json::from_slice::<String>(raw_key)
            .map_err(|e| EditError(format!("invalid member name: {e}")))?;
        decoded.as_bytes()
    } else {
        raw_key
            .strip_prefix(b"\"")
            .and_then(|k| k.strip_suffix(b"\""))
            .unwrap_or_default()
    };
    if remove.iter().any(|r| r.as_bytes() == key) {
        return Ok(Action::Remove);
    }
    Ok(set
        .iter()
        .rposition(|(k, _)| k.as_bytes() == key)
        .map_or(Action::Keep, Action::Set))
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    /// Expected closing brackets of the nested value being skipped (reused).
    stack: Vec<u8>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn rest(&self) -> &[u8] {
        self.b.get(self.pos..).unwrap_or_default()
    }

    fn fail<T>(&self, what: &str) -> Result<T, EditError> {
        let what = if self.pos >= self.b.len() {
            format!("{what}, found end of input")
        } else {
            format!("{what} at byte {}", self.pos)
        };
        Err(EditError(what))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skips the string starting at `pos` (its opening quote).
    ///
    /// Only `"` and control characters stop the word-at-a-time search, so escape-heavy text
    /// (`\n`, `\t`, `\u00e9`, ...) is skipped at full speed; a `"` preceded by an odd run of
    /// backslashes is escaped and the search goes on. Escape sequences are not otherwise
    /// checked: they cannot change where the string ends.
    fn string(&mut self) -> Result<(), EditError> {
        let start = self.pos;
        let mut from = start + 1;
        loop {
            let found = find_quote_or_control(self.b.get(from..).unwrap_or_default());
            let Some(at) = found.map(|i| from + i) else {
                return Err(EditError(format!("unterminated string at byte {start}")));
            };
            if self.b.get(at) != Some(&b'"') {
                self.pos = at;
                return self.fail("control character in string");
            }
            let backslashes = self
                .b
                .get(from..at)
                .unwrap_or_default()
                .iter()
                .rev()
                .take_while(|&&c| c == b'\\')
                .count();
            // The byte before `from` is a quote (opening or escaped), so the run of
            // backslashes cannot extend before `from`.
            if backslashes % 2 == 0 {
                self.pos = at + 1;
                return Ok(());
            }
            from = at + 1;
        }
    }

    /// Skips the value starting at `pos`.
    fn value(&mut self) -> Result<(), EditError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{' | b'[') => self.nested(),
            _ => self.scalar(),
        }
    }

    /// Skips the array or object starting at `pos`, tracking only strings and brackets.
    fn nested(&mut self) -> Result<(), EditError> {
        let start = self.pos;
        self.stack.clear();
        loop {
            let Some(i) = find_structural(self.rest()) else {
                self.pos = start;
                return self.fail("unterminated array or object");
            };
            self.pos += i;
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'{') => {
                    self.stack.push(b'}');
                    self.pos += 1;
                }
                Some(b'[') => {
                    self.stack.push(b']');
                    self.pos += 1;
                }
                Some(c) => {
                    if self.stack.pop() != Some(c) {
                        return self.fail("mismatched bracket");
                    }
                    self.pos += 1;
                    if self.stack.is_empty() {
                        return Ok(());
                    }
                }
                None => return self.fail("unterminated array or object"),
            }
        }
    }

    /// Skips a `true`, `false`, `null` or number token.
    fn scalar(&mut self) -> Result<(), EditError> {
        let rest = self.rest();
        let len = rest
            .iter()
            .position(|&c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            .unwrap_or(rest.len());
        let token = rest.get(..len).unwrap_or_default();
        if matches!(token, b"true" | b"false" | b"null") || is_number(token) {
            self.pos += len;
            Ok(())
        } else {
            self.fail("expected a value")
        }
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
fn is_number(t: &[u8]) -> bool {
    fn digits(t: &[u8]) -> (usize, &[u8]) {
        let n = t.iter().take_while(|c| c.is_ascii_digit()).count();
        (n, t.get(n..).unwrap_or_default())
    }
    let t = t.strip_prefix(b"-").unwrap_or(t);
    let t = match t.strip_prefix(b"0") {
        Some(rest) => rest,
        None => match digits(t) {
            (0, _) => return false,
            (_, rest) => rest,
        },
    };
    let t = match t.strip_prefix(b".") {
        Some(frac) => match digits(frac) {
            (0, _) => return false,
            (_, rest) => rest,
        },
        None => t,
    };
    let t = match t.strip_prefix(b"e").or_else(|| t.strip_prefix(b"E")) {
        Some(exp) => {
            let exp = exp
                .strip_prefix(b"+")
                .or_else(|| exp.strip_prefix(b"-"))
                .unwrap_or(exp);
            match digits(exp) {
                (0, _) => return false,
                (_, rest) => rest,
            }
        }
        None => t,
    };
    t.is_empty()
}

// Word-at-a-time byte search (SWAR). For a word `x`, `(x - 0x01..) & !x & 0x80..` has the
// high bit set in the lowest zero byte of `x`; bits above it may be spurious (borrows), bits
// below never are, so the lowest set bit locates the first match exactly. The same holds for
// `(x - n..) & !x & 0x80..` and bytes below `n` (n <= 0x80). All searched bytes are ASCII, so
// `x ^ needle` has the same high bits as `x` and the `& !x & 0x80..` part can be shared by
// every term: `hits = (term1 | term2 | ...) & !w & HI`.
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The borrow term of the zero-byte test for bytes equal to `needle` (ASCII).
#[inline(always)]
fn eq_term(w: u64, needle: u8) -> u64 {
    (w ^ (LO * u64::from(needle))).wrapping_sub(LO)
}

/// Index of the first byte of `s` for which `hit` holds; `terms` is its word-wise version
/// (before the shared `& !w & HI`).
#[inline(always)]
fn find_by(s: &[u8], terms: impl Fn(u64) -> u64, hit: impl Fn(u8) -> bool) -> Option<usize> {
    let mask = |w: u64| terms(w) & !w & HI;
    let mut off = 0usize;
    let mut pairs = s.chunks_exact(16);
    for pair in &mut pairs {
        let (a, b) = pair.split_at(8);
        let (Ok(a), Ok(b)) = (<[u8; 8]>::try_from(a), <[u8; 8]>::try_from(b)) else {
            // Unreachable (16-byte chunks split in halves); stay correct anyway.
            if let Some(p) = pair.iter().position(|&c| hit(c)) {
                return Some(off + p);
            }
            off += 16;
            continue;
        };
        let (ma, mb) = (mask(u64::from_le_bytes(a)), mask(u64::from_le_bytes(b)));
        if ma | mb != 0 {
            let m = u128::from(ma) | (u128::from(mb) << 64);
            return Some(off + (m.trailing_zeros() / 8) as usize);
        }
        off += 16;
    }
    pairs
        .remainder()
        .iter()
        .position(|&c| hit(c))
        .map(|p| off + p)
}

/// First `"` or control character: a possible end of a string, or a malformed one.
fn find_quote_or_control(s: &[u8]) -> Option<usize> {
    find_by(
        s,
        |w| eq_term(w, b'"') | w.wrapping_sub(LO * 0x20),
        |c| c == b'"' || c < 0x20,
    )
}

/// First `"`, `{`, `}`, `[` or `]`. `[`/`]` are `{`/`}` with bit 0x20 cleared and no other
/// byte maps onto `{`/`}` when that bit is set (which leaves high bits alone).
fn find_structural(s: &[u8]) -> Option<usize> {
    find_by(
        s,
        |w| {
            let folded = w | (LO * 0x20);
            eq_term(w, b'"') | eq_term(folded, b'{') | eq_term(folded, b'}')
        },
        |c| matches!(c, b'"' | b'{' | b'}' | b'[' | b']'),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn edit(body: &str, set: &[(&str, &str)], remove: &[&str]) -> String {
        let out = edit_object(body.as_bytes(), set, remove)
            .unwrap_or_else(|e| panic!("edit of {body:?} failed: {e}"));
        let out = String::from_utf8(out).expect("utf-8 output");
        if let Err(e) = serde_json::from_str::<Value>(&out) {
            panic!("output {out:?} of {body:?} is not JSON: {e}");
        }
        out
    }

    fn edit_err(body: &[u8], set: &[(&str, &str)], remove: &[&str]) -> EditError {
        match edit_object(body, set, remove) {
            Ok(out) => panic!(
                "expected an error for {:?}, got {:?}",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&out)
            ),
            Err(e) => e,
        }
    }

    fn rm(body: &str, keys: &[&str]) -> String {
        edit(body, &[], keys)
    }

    const MODEL: &[(&str, &str)] = &[("model", r#""router/fast""#)];

    // ---- replacement -------------------------------------------------------------------

    #[test]
    fn replace_keeps_every_other_byte() {
        let body =
            "{ \"model\" :\t\"gpt-4o\" ,\n  \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\
                    \"temperature\": 1.0e+10, \"n\": -0, \"x\": 1E-7 }";
        let want = "{ \"model\" :\t\"router/fast\" ,\n  \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\
                    \"temperature\": 1.0e+10, \"n\": -0, \"x\": 1E-7 }";
        assert_eq!(edit(body, MODEL, &[]), want);
    }

    #[test]
    fn replace_value_of_any_type() {
        assert_eq!(
            edit(r#"{"a":1,"model":{"x":[1,{"y":"}"}]},"b":2}"#, MODEL, &[]),
            r#"{"a":1,"model":"router/fast","b":2}"#
        );
        assert_eq!(
            edit(r#"{"model":[],"b":2}"#, MODEL, &[]),
            r#"{"model":"router/fast","b":2}"#
        );
        assert_eq!(
            edit(r#"{"model":null}"#, MODEL, &[]),
            r#"{"model":"router/fast"}"#
        );
        assert_eq!(
            edit(r#"{"model":-12.5e-3 }"#, MODEL, &[]),
            r#"{"model":"router/fast" }"#
        );
        assert_eq!(
            edit(r#"{"model":true,"b":false}"#, &[("b", "[1, 2]")], &[]),
            r#"{"model":true,"b":[1, 2]}"#
        );
    }

    #[test]
    fn replace_all_duplicates() {
        assert_eq!(
            edit(r#"{"model":"a","x":1,"model":"b"}"#, MODEL, &[]),
            r#"{"model":"router/fast","x":1,"model":"router/fast"}"#
        );
    }

    #[test]
    fn escaped_keys_are_decoded() {
        assert_eq!(
            edit(r#"{"mo\u0064el":"a","\u006dodel":"b"}"#, MODEL, &[]),
            r#"{"mo\u0064el":"router/fast","\u006dodel":"router/fast"}"#
        );
        assert_eq!(
            rm(r#"{"a":1,"pro\u0076ider":"x"}"#, &["provider"]),
            r#"{"a":1}"#
        );
        assert_eq!(
            edit(
                r#"{"a\"b":1,"c\\d":2,"\/":3}"#,
                &[("a\"b", "10"), ("c\\d", "20"), ("/", "30")],
                &[]
            ),
            r#"{"a\"b":10,"c\\d":20,"\/":30}"#
        );
        // A different key that merely looks similar is not touched.
        assert_eq!(
            edit(r#"{"model\u0000":1,"Model":2,"model ":3}"#, MODEL, &[]),
            r#"{"model":"router/fast","model\u0000":1,"Model":2,"model ":3}"#
        );
    }

    #[test]
    fn nested_members_are_untouched() {
        let body = r#"{"metadata":{"model":"x","provider":"y"},"tools":[{"model":1}],"model":"a","provider":"p"}"#;
        assert_eq!(
            edit(body, MODEL, &["provider"]),
            r#"{"metadata":{"model":"x","provider":"y"},"tools":[{"model":1}],"model":"router/fast"}"#
        );
        // Only nested occurrences: the top-level key is absent and gets inserted.
        assert_eq!(
            edit(
                r#"{"m":{"model":"x"},"provider":[{"provider":1}]}"#,
                MODEL,
                &["provider"]
            ),
            r#"{"model":"router/fast","m":{"model":"x"}}"#
        );
    }

    #[test]
    fn tricky_strings() {
        let body = r#"{"a":"{\"model\":1}, }","b":"\\","c":"\\\"","d":"model","e":"[{,:\"}]\\\\","model":"m","f":"\"model\":"}"#;
        let want = r#"{"a":"{\"model\":1}, }","b":"\\","c":"\\\"","d":"model","e":"[{,:\"}]\\\\","model":"router/fast","f":"\"model\":"}"#;
        assert_eq!(edit(body, MODEL, &[]), want);
        let want = r#"{"a":"{\"model\":1}, }","b":"\\","c":"\\\"","d":"model","e":"[{,:\"}]\\\\","f":"\"model\":"}"#;
        assert_eq!(rm(body, &["model"]), want);
        // Brackets inside nested strings do not confuse the depth tracking.
        assert_eq!(
            edit(r#"{"x":[{"s":"]}"},"\\\"{"],"model":1}"#, MODEL, &[]),
            r#"{"x":[{"s":"]}"},"\\\"{"],"model":"router/fast"}"#
        );
    }

    #[test]
    fn backslash_runs_before_quotes() {
        for run in 0..40 {
            // An even run of backslashes ends the string at the quote; an odd one escapes it.
            let even = "\\\\".repeat(run);
            let body = format!(r#"{{"a":"x{even}","model":1,"b":"{even}"}}"#);
            let want = format!(r#"{{"a":"x{even}","model":"router/fast","b":"{even}"}}"#);
            assert_eq!(edit(&body, MODEL, &[]), want);
            let odd = format!("{even}\\\"");
            let body = format!(r#"{{"a":"{odd},\"model\":1","model":2,"k":"{odd}{odd}"}}"#);
            let want = format!(r#"{{"a":"{odd},\"model\":1","k":"{odd}{odd}"}}"#);
            assert_eq!(rm(&body, &["model"]), want);
        }
    }

    #[test]
    fn escapes_inside_values_pass_through() {
        // Not valid JSON, but the member boundaries are unambiguous: forwarded as they are.
        let body = r#"{"a":"\e \u12g4 \u1","model":1}"#;
        let out = edit_object(body.as_bytes(), MODEL, &[]).expect("edit");
        assert_eq!(out, br#"{"a":"\e \u12g4 \u1","model":"router/fast"}"#);
        // A member name with a bad escape cannot be compared.
        edit_err(br#"{"mod\el":1}"#, MODEL, &[]);
        assert_eq!(
            edit_object(br#"{"mod\el":1}"#, &[], &[]).expect("no edits"),
            br#"{"mod\el":1}"#
        );
    }

    #[test]
    fn unicode_is_preserved() {
        let body = "{\"messages\":[{\"content\":\"日本語のテキスト 😀 \\ud83d\\ude00 \\u00e9\"}],\"模型\":\"值\",\"model\":\"x\",\"emoji😀\":1}";
        let want = "{\"messages\":[{\"content\":\"日本語のテキスト 😀 \\ud83d\\ude00 \\u00e9\"}],\"模型\":\"值\",\"model\":\"router/fast\",\"emoji😀\":1}";
        assert_eq!(edit(body, MODEL, &[]), want);
        assert_eq!(
            edit(body, &[("模型", r#""新""#)], &["emoji😀"]),
            "{\"messages\":[{\"content\":\"日本語のテキスト 😀 \\ud83d\\ude00 \\u00e9\"}],\"模型\":\"新\",\"model\":\"x\"}"
        );
        // Escaped non-ASCII key, including a surrogate pair.
        assert_eq!(
            rm(
                r#"{"\u6a21\u578b":1,"\ud83d\ude00":2,"k":3}"#,
                &["模型", "😀"]
            ),
            r#"{"k":3}"#
        );
    }

    #[test]
    fn numbers_are_verbatim() {
        let body = r#"{"a":1.0e+10,"b":-0,"c":0.10,"d":123456789012345678901234567890,"e":2.5E+300,"model":"x"}"#;
        let want = r#"{"a":1.0e+10,"b":-0,"c":0.10,"d":123456789012345678901234567890,"e":2.5E+300,"model":"router/fast"}"#;
        assert_eq!(edit(body, MODEL, &[]), want);
    }

    // ---- removal -----------------------------------------------------------------------

    #[test]
    fn remove_in_every_position() {
        assert_eq!(
            rm(r#"{"model":1,"a":2,"b":3}"#, &["model"]),
            r#"{"a":2,"b":3}"#
        );
        assert_eq!(
            rm(r#"{"a":2,"model":1,"b":3}"#, &["model"]),
            r#"{"a":2,"b":3}"#
        );
        assert_eq!(
            rm(r#"{"a":2,"b":3,"model":1}"#, &["model"]),
            r#"{"a":2,"b":3}"#
        );
        assert_eq!(rm(r#"{"model":1}"#, &["model"]), r#"{}"#);
        assert_eq!(rm(r#"{"a":2}"#, &["model"]), r#"{"a":2}"#);
        assert_eq!(rm(r#"{}"#, &["model"]), r#"{}"#);
    }

    #[test]
    fn remove_with_weird_whitespace() {
        let pretty = "{\n  \"a\": 1,\n  \"model\": \"x\",\n  \"b\": [\n    2\n  ]\n}";
        assert_eq!(
            rm(pretty, &["model"]),
            "{\n  \"a\": 1,\n  \"b\": [\n    2\n  ]\n}"
        );
        assert_eq!(
            rm(pretty, &["a"]),
            "{\n  \"model\": \"x\",\n  \"b\": [\n    2\n  ]\n}"
        );
        assert_eq!(rm(pretty, &["b"]), "{\n  \"a\": 1,\n  \"model\": \"x\"\n}");
        assert_eq!(rm(pretty, &["a", "model", "b"]), "{\n  \n}");
        assert_eq!(
            rm(" \r\n{\t\"model\"\t:\t1\t,\t\"a\"\t:\t2\t}\n ", &["model"]),
            " \r\n{\t\"a\"\t:\t2\t}\n "
        );
        assert_eq!(
            rm(" {\t\"a\"\t:\t2 \n,\r\n\"model\"\n:\n1\n}\t", &["model"]),
            " {\t\"a\"\t:\t2\n}\t"
        );
        assert_eq!(rm("{ \"model\" : 1 }", &["model"]), "{  }");
        assert_eq!(
            rm("{\"a\":1 , \"model\":2 , \"b\":3}", &["model"]),
            "{\"a\":1 , \"b\":3}"
        );
    }

    #[test]
    fn remove_runs_and_duplicates() {
        let body = r#"{"p":1,"m":2,"a":3,"p":4,"m":5}"#;
        assert_eq!(rm(body, &["p"]), r#"{"m":2,"a":3,"m":5}"#);
        assert_eq!(rm(body, &["m"]), r#"{"p":1,"a":3,"p":4}"#);
        assert_eq!(rm(body, &["p", "m"]), r#"{"a":3}"#);
        assert_eq!(rm(body, &["a", "m"]), r#"{"p":1,"p":4}"#);
        assert_eq!(rm(body, &["a", "p", "m"]), r#"{}"#);
        assert_eq!(
            rm(r#"{"x":1,"y":2,"z":3,"k":4}"#, &["y", "z"]),
            r#"{"x":1,"k":4}"#
        );
        assert_eq!(
            rm(r#"{"x":1,"y":2,"z":3,"k":4}"#, &["x", "y"]),
            r#"{"z":3,"k":4}"#
        );
        assert_eq!(
            rm(r#"{"x":1,"y":2,"z":3,"k":4}"#, &["z", "k"]),
            r#"{"x":1,"y":2}"#
        );
        assert_eq!(
            rm(r#"{"x":1,"y":2,"z":3,"k":4}"#, &["x", "k"]),
            r#"{"y":2,"z":3}"#
        );
        assert_eq!(
            rm(r#"{"x":1,"y":2,"z":3,"k":4}"#, &["x", "z"]),
            r#"{"y":2,"k":4}"#
        );
        assert_eq!(
            rm(r#"{"x":1,"y":2,"z":3,"k":4}"#, &["y", "k"]),
            r#"{"x":1,"z":3}"#
        );
    }

    #[test]
    fn remove_and_replace_together() {
        assert_eq!(
            edit(
                r#"{"provider":"a","model":"m","allowed_models":["x"],"n":1}"#,
                MODEL,
                &["provider", "allowed_models"]
            ),
            r#"{"model":"router/fast","n":1}"#
        );
        assert_eq!(
            edit(r#"{"model":"m","provider":"a"}"#, MODEL, &["provider"]),
            r#"{"model":"router/fast"}"#
        );
        assert_eq!(
            edit(r#"{"provider":"a","model":"m"}"#, MODEL, &["provider"]),
            r#"{"model":"router/fast"}"#
        );
    }

    #[test]
    fn remove_wins_over_set() {
        assert_eq!(
            edit(r#"{"a":1,"model":"m"}"#, MODEL, &["model"]),
            r#"{"a":1}"#
        );
        // ... and an absent key in both lists is not inserted.
        assert_eq!(edit(r#"{"a":1}"#, MODEL, &["model"]), r#"{"a":1}"#);
    }

    // ---- insertion ---------------------------------------------------------------------

    #[test]
    fn insert_into_empty_objects() {
        assert_eq!(edit("{}", MODEL, &[]), r#"{"model":"router/fast"}"#);
        assert_eq!(edit("{ }", MODEL, &[]), r#"{"model":"router/fast" }"#);
        assert_eq!(
            edit("\n{\n}\n", MODEL, &[]),
            "\n{\"model\":\"router/fast\"\n}\n"
        );
    }

    #[test]
    fn insert_into_non_empty_objects() {
        assert_eq!(
            edit(r#"{"a":1}"#, MODEL, &[]),
            r#"{"model":"router/fast","a":1}"#
        );
        assert_eq!(
            edit("{\n  \"a\": 1\n}", MODEL, &[]),
            "{\"model\":\"router/fast\",\n  \"a\": 1\n}"
        );
        // Several insertions keep the order of `set`; present keys are replaced in place.
        assert_eq!(
            edit(
                r#"{"b":1}"#,
                &[("x", "1"), ("b", "2"), ("y", r#"{"z":null}"#)],
                &[]
            ),
            r#"{"x":1,"y":{"z":null},"b":2}"#
        );
        // Keys needing escapes are written as JSON strings.
        assert_eq!(edit("{}", &[("a\"b\\c\n", "1")], &[]), r#"{"a\"b\\c\n":1}"#);
    }

    #[test]
    fn insert_after_removing_everything() {
        assert_eq!(
            edit(r#"{"provider":"p"}"#, MODEL, &["provider"]),
            r#"{"model":"router/fast"}"#
        );
        assert_eq!(
            edit(
                "{ \"provider\":\"p\" , \"x\":1 }",
                MODEL,
                &["provider", "x"]
            ),
            r#"{"model":"router/fast"  }"#
        );
        assert_eq!(
            edit(r#"{"provider":"p","x":1}"#, MODEL, &["provider"]),
            r#"{"model":"router/fast","x":1}"#
        );
    }

    #[test]
    fn duplicate_set_keys_last_wins() {
        assert_eq!(
            edit(r#"{"model":"m"}"#, &[("model", "1"), ("model", "2")], &[]),
            r#"{"model":2}"#
        );
        assert_eq!(
            edit("{}", &[("model", "1"), ("model", "2")], &[]),
            r#"{"model":2}"#
        );
    }

    // ---- unchanged bodies --------------------------------------------------------------

    #[test]
    fn unchanged_when_nothing_matches() {
        for body in [
            "{}",
            " { } ",
            "\n\t{\"a\" : [1, {\"model\": 2}] }\r\n",
            r#"{"messages":[],"stream":true}"#,
        ] {
            assert_eq!(edit(body, &[], &["model"]), body);
            assert_eq!(edit(body, &[], &[]), body);
        }
    }

    // ---- malformed input ---------------------------------------------------------------

    #[test]
    fn malformed_bodies_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"   ",
            b"[]",
            b"[{\"model\":1}]",
            b"\"model\"",
            b"42",
            b"null",
            b"{",
            b"{\"model\"",
            b"{\"model\":",
            b"{\"model\":\"x",
            b"{\"model\":\"x\"",
            b"{\"model\":\"x\",",
            b"{\"model\":\"x\",}",
            b"{,\"model\":1}",
            b"{\"model\" 1}",
            b"{\"model\":1 \"a\":2}",
            b"{\"model\":}",
            b"{\"model\":tru}",
            b"{\"model\":nulll}",
            b"{\"model\":01}",
            b"{\"model\":1.}",
            b"{\"model\":.5}",
            b"{\"model\":1e}",
            b"{\"model\":+1}",
            b"{\"model\":--1}",
            b"{\"model\":[1,2}",
            b"{\"model\":{\"a\":[}]}",
            b"{\"model\":[[[1]]}",
            b"{\"model\":[\"]\"}",
            b"{\"model\":\"\\",
            b"{\"model\":\"a\nb\"}",
            b"{\"model\":1}}",
            b"{\"model\":1} x",
            b"{\"model\":1}{}",
            b"\xef\xbb\xbf{}",
            b"{model:1}",
            b"{'model':1}",
            b"{\"model\":1]",
        ];
        for &body in cases {
            let e = edit_err(body, MODEL, &["provider"]);
            assert!(!e.0.is_empty());
            // Also with nothing to do: validation does not depend on the edits.
            edit_err(body, &[], &[]);
        }
    }

    #[test]
    fn escaped_key_with_lone_surrogate_is_an_error() {
        edit_err(br#"{"\ud800":1}"#, MODEL, &[]);
    }

    #[test]
    fn invalid_new_value_is_an_error() {
        for raw in ["", "model", "{", "1 2", "\"a"] {
            let e = edit_err(b"{}", &[("model", raw)], &[]);
            assert!(e.0.contains("model"), "{e}");
        }
        assert_eq!(
            edit_err(b"{}", &[("model", "x")], &[]).to_string(),
            "cannot edit JSON body: new value for \"model\" is not valid JSON"
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let body = "\n{ \"model\" : \"gp\\\"t\\u00e9\" , \"messages\" : [ { \"role\" : \"user\", \"content\": \"a{b}c[d]\" } ],\"n\":-1.5e+3, \"t\":true,\"f\":false,\"z\":null } \n";
        let close = body.rfind('}').expect("has a closing brace");
        for cut in 0..body.len() {
            let prefix = &body.as_bytes()[..cut];
            let result = edit_object(prefix, MODEL, &[]);
            assert_eq!(
                result.is_ok(),
                cut > close,
                "prefix {:?}: {result:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    // ---- json_string -------------------------------------------------------------------

    #[test]
    fn json_string_quotes_and_escapes() {
        assert_eq!(json_string("gpt-4o"), r#""gpt-4o""#);
        assert_eq!(json_string(""), r#""""#);
        assert_eq!(json_string("a\"b\\c\n\t\u{1}"), r#""a\"b\\c\n\t\u0001""#);
        assert_eq!(json_string("日本 😀"), "\"日本 😀\"");
        let round: String = serde_json::from_str(&json_string("x\"y\u{7f}\u{2028}")).expect("json");
        assert_eq!(round, "x\"y\u{7f}\u{2028}");
    }

    // ---- SWAR helpers ------------------------------------------------------------------

    #[test]
    fn word_search_matches_naive_search() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"ab\"\\{}[]\x00\x1f\x20\x7b\x7d\x5b\x5d\xff\x80\xa2\xdc\x3b\x3d\xfb\xfd";
        for _ in 0..20_000 {
            let len = rng.below(40);
            let s: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(3) == 0 {
                        alphabet[rng.below(alphabet.len())]
                    } else {
                        rng.next() as u8
                    }
                })
                .collect();
            assert_eq!(
                find_quote_or_control(&s),
                s.iter().position(|&c| c == b'"' || c < 0x20),
                "{s:?}"
            );
            assert_eq!(
                find_structural(&s),
                s.iter().position(|c| b"\"{}[]".contains(c)),
                "{s:?}"
            );
        }
    }

    // ---- size / speed ------------------------------------------------------------------

    fn big_body(model_first: bool) -> String {
        let chunk =
            "Lorem ipsum dolor sit amet, \\\"quoted\\\" {model} [x] 日本語 😀 \\u00e9 ".repeat(64);
        let mut body = String::with_capacity(1 << 21);
        body.push('{');
        if model_first {
            body.push_str("\"model\":\"gpt-4o\",");
        }
        body.push_str("\"messages\":[");
        let mut i = 0;
        while body.len() < (1 << 20) {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                "{{\"role\":\"user\",\"model\":{i},\"content\":\"{chunk}\",\"scores\":[1.5,-2e3,{i}]}}"
            ));
            i += 1;
        }
        body.push_str("],\"provider\":\"p\",\"stream\":true}");
        body
    }

    #[test]
    fn large_body() {
        let body = big_body(true);
        let started = std::time::Instant::now();
        let out = edit_object(body.as_bytes(), MODEL, &["provider"]).expect("edit");
        let elapsed = started.elapsed();
        eprintln!("edit_object on {} bytes: {elapsed:?}", body.len());
        let want = body
            .replacen("\"model\":\"gpt-4o\"", "\"model\":\"router/fast\"", 1)
            .replacen(",\"provider\":\"p\"", "", 1);
        assert!(out == want.as_bytes());

        let body = big_body(false);
        let out = edit_object(body.as_bytes(), MODEL, &[]).expect("edit");
        let want = format!("{{\"model\":\"router/fast\",{}", &body[1..]);
        assert!(out == want.as_bytes());
    }

    // ---- property test -----------------------------------------------------------------

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, one_in: usize) -> bool {
            self.below(one_in) == 0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const KEYS: &[&str] = &[
        "model",
        "provider",
        "allowed_models",
        "messages",
        "stream",
        "a",
        "b",
        "x y",
        "",
        "日本",
        "q\"k",
    ];

    fn ws(rng: &mut XorShift) -> &'static str {
        ["", "", "", " ", "\n", "\t", "\r\n  ", "  "][rng.below(8)]
    }

    /// A key as JSON text, sometimes with a character written as a `\u` escape.
    fn gen_key(rng: &mut XorShift, key: &str) -> String {
        let plain = json_string(key);
        if key.is_empty() || !rng.chance(3) {
            return plain;
        }
        let chars: Vec<char> = key.chars().collect();
        let at = rng.below(chars.len());
        let mut out = String::from("\"");
        for (i, c) in chars.iter().enumerate() {
            if i == at {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            } else {
                let s = json_string(&c.to_string());
                out.push_str(&s[1..s.len() - 1]);
            }
        }
        out.push('"');
        out
    }

    fn gen_string(rng: &mut XorShift) -> String {
        const PIECES: &[&str] = &[
            "plain",
            "model",
            "provider",
            "{",
            "}",
            ",",
            ":",
            "[",
            "]",
            "\\\"",
            "\\\\",
            "\\n",
            "\\/",
            "\\u0041",
            "\\ud83d\\ude00",
            "日本語",
            "😀",
            " ",
            "\\\\\\\"",
            "\"model\":",
        ];
        let mut s = String::from("\"");
        for _ in 0..rng.below(5) {
            let piece = rng.pick(PIECES);
            // A bare `"` piece would end the string: escape it.
            if piece == "\"model\":" {
                s.push_str("\\\"model\\\":");
            } else {
                s.push_str(piece);
            }
        }
        if rng.chance(10) {
            for _ in 0..rng.below(40) {
                s.push_str(rng.pick(&["long text ", "\\\\", "\\\"", "\\n", "{[\\\"]}"]));
            }
        }
        s.push('"');
        s
    }

    fn gen_value(rng: &mut XorShift, depth: usize) -> String {
        const SCALARS: &[&str] = &[
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1.5",
            "1.0e+10",
            "-12E-3",
            "42",
            "0.10",
            "123456789012345678901234567890",
        ];
        let kind = if depth == 0 {
            rng.below(2)
        } else {
            rng.below(4)
        };
        match kind {
            0 => rng.pick(SCALARS).to_owned(),
            1 => gen_string(rng),
            2 => {
                let mut s = String::from("[");
                s.push_str(ws(rng));
                for i in 0..rng.below(4) {
                    if i > 0 {
                        s.push(',');
                        s.push_str(ws(rng));
                    }
                    s.push_str(&gen_value(rng, depth - 1));
                    s.push_str(ws(rng));
                }
                s.push(']');
                s
            }
            _ => gen_object(rng, depth - 1),
        }
    }

    /// An object with distinct (decoded) keys, random whitespace and escapes.
    fn gen_object(rng: &mut XorShift, depth: usize) -> String {
        let mut keys: Vec<&str> = Vec::new();
        for _ in 0..rng.below(7) {
            let key = rng.pick(KEYS);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let mut s = String::from("{");
        s.push_str(ws(rng));
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                s.push(',');
                s.push_str(ws(rng));
            }
            s.push_str(&gen_key(rng, key));
            s.push_str(ws(rng));
            s.push(':');
            s.push_str(ws(rng));
            s.push_str(&gen_value(rng, depth));
            s.push_str(ws(rng));
        }
        s.push('}');
        s
    }

    #[test]
    fn random_objects_match_serde_json() {
        const EDIT_KEYS: &[&str] = &[
            "model",
            "provider",
            "allowed_models",
            "stream",
            "new_key",
            "日本",
            "",
        ];
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for round in 0..4000 {
            let body = format!(
                "{}{}{}",
                ws(&mut rng),
                gen_object(&mut rng, 3),
                ws(&mut rng)
            );
            let original: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("generator produced invalid JSON {body:?}: {e}"));

            let set_values: Vec<(&str, String)> = (0..rng.below(4))
                .map(|_| (rng.pick(EDIT_KEYS), gen_value(&mut rng, 2)))
                .collect();
            let set: Vec<(&str, &str)> = set_values.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let remove: Vec<&str> = (0..rng.below(3)).map(|_| rng.pick(EDIT_KEYS)).collect();

            let out = edit_object(body.as_bytes(), &set, &remove)
                .unwrap_or_else(|e| panic!("round {round}: {body:?} {set:?} {remove:?}: {e}"));
            let out = String::from_utf8(out).expect("utf-8 output");
            let got: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
                panic!(
                    "round {round}: invalid output {out:?} from {body:?} {set:?} {remove:?}: {e}"
                )
            });

            let mut want = original.as_object().expect("object").clone();
            for (k, v) in &set {
                if !remove.contains(k) {
                    want.insert((*k).to_owned(), serde_json::from_str(v).expect("value"));
                }
            }
            for k in &remove {
                want.remove(*k);
            }
            assert_eq!(
                got,
                Value::Object(want),
                "round {round}: {body:?} {set:?} {remove:?} gave {out:?}"
            );

            // Leading and trailing whitespace survive.
            let lead = body.len() - body.trim_start().len();
            let trail = body.len() - body.trim_end().len();
            assert_eq!(&out[..lead], &body[..lead]);
            assert_eq!(&out[out.len() - trail..], &body[body.len() - trail..]);

            // Nothing to do: byte-identical.
            let touches = set.iter().any(|(k, _)| !remove.contains(k))
                || remove.iter().any(|k| original.get(*k).is_some());
            if !touches {
                assert_eq!(out, body, "round {round}");
            }

            // Removal only shrinks the body, by the removed members and commas.
            if set.is_empty() {
                assert!(out.len() <= body.len());
            }
        }
    }
}
