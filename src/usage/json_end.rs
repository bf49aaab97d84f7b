//! Where a JSON body ends, found as its bytes pass: for a body whose end of stream never
//! reaches the filter while the filter holds it. Envoy's decompressor ends every body it
//! decodes with trailers, and trailers added that way wait for the filter that holds the
//! body to go on; a held answer would wait forever.

/// Tracks the top-level JSON value of a body, chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct JsonEnd {
    /// Objects and arrays open.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The body's first value started (`{` or `[`).
    started: bool,
    ended: bool,
}

/// What the bytes so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The top-level object or array is still open (or nothing but whitespace came yet).
    Open,
    /// The top-level object or array closed: the body is whole.
    Closed,
    /// The body does not start with an object or an array: its end cannot be seen.
    Unknown,
}

impl JsonEnd {
    /// The next bytes of the body.
    pub fn push(&mut self, chunk: &[u8]) -> BodyEnd {
        for &b in chunk {
            if self.ended {
                break;
            }
            if !self.started {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' | b'[' => {
                        self.started = true;
                        self.depth = 1;
                        continue;
                    }
                    _ => return BodyEnd::Unknown,
                }
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.ended = self.depth == 0;
                }
                _ => {}
            }
        }
        if self.ended {
            BodyEnd::Closed
        } else {
            BodyEnd::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_every_split(body: &[u8]) -> Vec<BodyEnd> {
        (0..=body.len())
            .map(|cut| {
                let mut end = JsonEnd::default();
                let (a, b) = body.split_at(cut);
                end.push(a);
                end.push(b)
            })
            .collect()
    }

    #[test]
    fn an_object_ends_where_it_closes_however_it_is_cut() {
        let body = br#" {"a":"}]{[\"\\","b":[{"c":1},[]],"usage":{"total_tokens":3}}"#;
        assert!(at_every_split(body).iter().all(|e| *e == BodyEnd::Closed));
        for cut in 0..body.len() {
            let mut end = JsonEnd::default();
            assert_eq!(end.push(&body[..cut]), BodyEnd::Open, "{cut}");
        }
        // Bytes after the end change nothing.
        let mut end = JsonEnd::default();
        assert_eq!(end.push(b"[1,2]\n"), BodyEnd::Closed);
        assert_eq!(end.push(b"{"), BodyEnd::Closed);
    }

    #[test]
    fn a_body_that_is_no_object_or_array_has_no_visible_end() {
        for body in [&b"\"text\""[..], b"42", b"plain text {", b"\xef\xbb\xbf{}"] {
            assert_eq!(JsonEnd::default().push(body), BodyEnd::Unknown, "{body:?}");
        }
        assert_eq!(JsonEnd::default().push(b"  \n"), BodyEnd::Open);
    }
}
