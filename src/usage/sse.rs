//! Usage of a server-sent-events response, read event by event as its chunks pass, and the
//! removal of OpenAI's usage-only chunk when the router (not the client) asked for it.

use std::borrow::Cow;
use std::ops::Range;

use super::{
    event_usage, has_usage_object, keep_tail, lenient_counts, reserve_capped, Counts, Usage,
    END_BYTES, MAX_EVENT_BYTES, USAGE_KEY,
};

/// What to send on in place of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Send the chunk as it came.
    Unchanged,
    /// Send these bytes instead of the chunk (may be empty).
    Replace(Vec<u8>),
}

/// Where the `\n` goes that may follow a `\r` ending a chunk (`\r\n` split across two chunks
/// is one line ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cr {
    /// The last chunk did not end with a `\r`.
    None,
    /// The `\r` ended a line of the current event: the `\n` is part of it.
    InEvent,
    /// The `\r` was the blank line ending an event that was sent: send the `\n` too.
    EndedSent,
    /// ... of an event that was removed: remove the `\n` too.
    EndedRemoved,
}

/// A server-sent-events response as it passes, chunk by chunk.
#[derive(Debug)]
pub struct StreamUsage {
    /// Remove OpenAI's usage-only chunk (so incomplete events are held back until they end).
    strip: bool,
    /// The current event so far (from its first line up to its blank line), or only its last
    /// [`END_BYTES`] once it is oversized. With `strip` and not oversized: not yet sent.
    event: Vec<u8>,
    /// The length of the current event so far.
    event_len: usize,
    /// The current event is longer than [`MAX_EVENT_BYTES`].
    oversized: bool,
    /// The next byte starts a line (so a line ending there makes a blank line).
    line_start: bool,
    cr: Cr,
    counts: Option<Counts>,
    stripped: bool,
}

impl StreamUsage {
    /// `strip`: remove the usage-only chunk of an OpenAI chat/completions stream from what the
    /// client gets (the router added `stream_options.include_usage` itself; the client did not
    /// ask).
    pub fn new(strip: bool) -> StreamUsage {
        StreamUsage {
            strip,
            event: Vec::new(),
            event_len: 0,
            oversized: false,
            line_start: true,
            cr: Cr::None,
            counts: None,
            stripped: false,
        }
    }

    /// One chunk of the body. Without `strip` always [`Edit::Unchanged`]. With `strip`: the
    /// complete events of what was held and `chunk`, byte-exact but for the usage-only event;
    /// an incomplete last event is held until it ends (at `end_of_stream` everything held is
    /// sent, an incomplete event as it is). [`Edit::Unchanged`] when that is `chunk` itself.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Edit {
        let mut out = Output {
            chunk,
            enabled: self.strip,
            copy: None,
        };
        // Where the bytes of the current event start in `chunk`.
        let mut start = 0;
        // Where the search for line endings goes on.
        let mut at = 0;
        if chunk.first() == Some(&b'\n') {
            match self.cr {
                Cr::None => {}
                Cr::InEvent => at = 1,
                Cr::EndedSent => {
                    (at, start) = (1, 1);
                    out.send(0..1);
                }
                Cr::EndedRemoved => {
                    (at, start) = (1, 1);
                    out.skip(0..1);
                }
            }
        }
        if !chunk.is_empty() {
            self.cr = Cr::None;
        }
        while let Some(off) = chunk
            .get(at..)
            .and_then(|rest| memchr::memchr2(b'\n', b'\r', rest))
        {
            let line_end = at + off;
            let blank = off == 0 && self.line_start;
            let mut next = line_end + 1;
            let mut cr_last = false;
            if chunk.get(line_end) == Some(&b'\r') {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => cr_last = !end_of_stream,
                }
            }
            self.line_start = true;
            if blank {
                let piece = chunk.get(start..line_end).unwrap_or_default();
                let sent = self.end_event(piece, true, start..next, &mut out);
                if cr_last {
                    self.cr = if sent {
                        Cr::EndedSent
                    } else {
                        Cr::EndedRemoved
                    };
                }
                start = next;
            } else if cr_last {
                self.cr = Cr::InEvent;
            }
            at = next;
        }
        if at < chunk.len() {
            self.line_start = false;
        }
        let rest = start..chunk.len();
        let piece = chunk.get(rest.clone()).unwrap_or_default();
        if end_of_stream {
            if self.event_len + piece.len() > 0 {
                self.end_event(piece, false, rest, &mut out);
            }
            self.line_start = true;
            self.cr = Cr::None;
            self.event = Vec::new();
        } else {
            self.hold(piece, rest, &mut out);
        }
        out.finish()
    }

    /// The usage learned so far (final once the stream ended).
    pub fn usage(&self) -> Option<Usage> {
        self.counts.and_then(Counts::usage)
    }

    /// Whether a usage-only chunk was removed.
    pub fn stripped(&self) -> bool {
        self.stripped
    }

    /// Bytes buffered for the current event (bounded by about [`MAX_EVENT_BYTES`]).
    pub fn held_bytes(&self) -> usize {
        self.event.capacity()
    }

    /// The current event ends with `piece` (its part in this chunk up to its blank line);
    /// `range`: its bytes in the chunk, the blank line included. `strippable`: false for an
    /// event cut off by the end of the stream. Returns whether the event is sent.
    fn end_event(
        &mut self,
        piece: &[u8],
        strippable: bool,
        range: Range<usize>,
        out: &mut Output,
    ) -> bool {
        let len = self.event_len + piece.len();
        let unsent = self.strip && !self.oversized;
        let sent = if len > MAX_EVENT_BYTES {
            // Too large to be the usage-only chunk; its usage is near its end.
            if unsent {
                out.send_held(range.start, &self.event);
            }
            if let Some(counts) = lenient_counts(tail_of(&mut self.event, piece)) {
                self.counts = Some(counts);
            }
            true
        } else {
            let held = self.event.len();
            let event = if held == 0 {
                piece
            } else {
                reserve_capped(&mut self.event, piece.len(), MAX_EVENT_BYTES);
                self.event.extend_from_slice(piece);
                &self.event
            };
            let found = usage_in_event(event);
            if let Some(found) = found {
                self.counts = Some(match (found.merge, self.counts) {
                    (true, Some(before)) => before.overridden_by(found.counts),
                    _ => found.counts,
                });
            }
            let removed = self.strip && strippable && found.is_some_and(|f| f.usage_only);
            if !removed && unsent {
                out.send_held(range.start, self.event.get(..held).unwrap_or_default());
            }
            !removed
        };
        if sent {
            out.send(range);
        } else {
            out.skip(range);
            self.stripped = true;
        }
        self.event.clear();
        if self.event.capacity() > 2 * END_BYTES {
            // Do not keep a large event's buffer for the many small ones.
            self.event = Vec::new();
        }
        self.event_len = 0;
        self.oversized = false;
        sent
    }

    /// `piece` (at `range` in the chunk) continues the current event, which has not ended.
    fn hold(&mut self, piece: &[u8], range: Range<usize>, out: &mut Output) {
        let len = self.event_len + piece.len();
        if len > MAX_EVENT_BYTES {
            if !self.oversized && self.strip {
                out.send_held(range.start, &self.event);
            }
            self.oversized = true;
            keep_tail(&mut self.event, piece);
            out.send(range);
        } else {
            reserve_capped(&mut self.event, piece.len(), MAX_EVENT_BYTES);
            self.event.extend_from_slice(piece);
            out.skip(range);
        }
        self.event_len = len;
    }
}

/// The last [`END_BYTES`] of what `held` holds followed by `piece`.
fn tail_of<'a>(held: &'a mut Vec<u8>, piece: &'a [u8]) -> &'a [u8] {
    if let Some(tail) = piece
        .len()
        .checked_sub(END_BYTES)
        .and_then(|s| piece.get(s..))
    {
        return tail;
    }
    keep_tail(held, piece);
    held
}

/// The usage in one whole event (its lines up to its blank line), parsing its data only when
/// a cheap look finds a `usage` object in it.
fn usage_in_event(event: &[u8]) -> Option<super::EventUsage> {
    memchr::memmem::find(event, USAGE_KEY)?;
    let data = event_data(event)?;
    if !has_usage_object(&data) {
        return None;
    }
    event_usage(&data)
}

/// The data of an event: its `data` lines' values joined with `\n` (borrowed when there is one).
fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut data: Option<Cow<[u8]>> = None;
    for line in Lines(event) {
        let Some(value) = data_value(line) else {
            continue;
        };
        match &mut data {
            None => data = Some(Cow::Borrowed(value)),
            Some(joined) => {
                let joined = joined.to_mut();
                joined.push(b'\n');
                joined.extend_from_slice(value);
            }
        }
    }
    data
}

/// The value of a `data` field line (`data`, `data:value` or `data: value`).
fn data_value(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"data")?;
    match rest.split_first() {
        None => Some(rest),
        Some((b':', value)) => Some(value.strip_prefix(b" ").unwrap_or(value)),
        Some(_) => None,
    }
}

/// The lines of an event, split at `\r\n`, `\n` or `\r`.
struct Lines<'a>(&'a [u8]);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let bytes = self.0;
        let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) else {
            self.0 = &[];
            return Some(bytes);
        };
        let crlf = bytes.get(end..end + 2) == Some(b"\r\n");
        self.0 = bytes.get(end + 1 + usize::from(crlf)..).unwrap_or_default();
        bytes.get(..end)
    }
}

/// What one push sends on: the chunk as it is until some of it is removed or held, then a copy.
struct Output<'a> {
    chunk: &'a [u8],
    /// Only with `strip`; otherwise the chunk always goes as it is.
    enabled: bool,
    /// `None`: every byte of the chunk handled so far is sent as it is.
    copy: Option<Vec<u8>>,
}

impl Output<'_> {
    /// Sends `range` of the chunk (ranges come in order, each after the one before).
    fn send(&mut self, range: Range<usize>) {
        if let Some(copy) = &mut self.copy {
            copy.extend_from_slice(self.chunk.get(range).unwrap_or_default());
        }
    }

    /// Leaves out `range` of the chunk.
    fn skip(&mut self, range: Range<usize>) {
        if self.enabled && !range.is_empty() && self.copy.is_none() {
            self.copy = Some(self.chunk.get(..range.start).unwrap_or_default().to_vec());
        }
    }

    /// Sends held bytes before the chunk's bytes from `at` on.
    fn send_held(&mut self, at: usize, held: &[u8]) {
        if !self.enabled || held.is_empty() {
            return;
        }
        let chunk = self.chunk;
        self.copy
            .get_or_insert_with(|| chunk.get(..at).unwrap_or_default().to_vec())
            .extend_from_slice(held);
    }

    fn finish(self) -> Edit {
        match self.copy {
            Some(copy) if copy != self.chunk => Edit::Replace(copy),
            _ => Edit::Unchanged,
        }
    }
}
