//! The header edits of one callback, made with one host call: the edits are collected, then
//! applied to the header map already read (order kept, each edited header in the place of its
//! first value) and the whole map written back once (`proxy_set_header_map_pairs`, which
//! Envoy also treats as a header change for the route). A map that is not known, or whose
//! names did not read back exactly (or a host that refuses the whole-map write), gets one call
//! per edit instead; nothing changed, no call.

use crate::host::{HeaderPairs, Host, HostResult};

/// Which header map of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Header sets (`Some`) and removals (`None`) by lower-case name; a later edit of a name
/// replaces an earlier one.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HeaderEdits {
    edits: Vec<(String, Option<String>)>,
}

impl HeaderEdits {
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        match self
            .edits
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => *v = value,
            None => self.edits.push((name.to_ascii_lowercase(), value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    fn edit_of(&self, name: &str) -> Option<&Option<String>> {
        self.edits
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// `base` with the edits applied: an edited header takes the place of its first value
    /// (later values go), a new one comes last, everything else stays as it was.
    pub fn applied_to(&self, base: &[(String, Vec<u8>)]) -> HeaderPairs {
        let mut out: HeaderPairs = Vec::with_capacity(base.len() + self.edits.len());
        let mut placed: Vec<&str> = Vec::new();
        for (name, value) in base {
            match self.edit_of(name) {
                None => out.push((name.clone(), value.clone())),
                Some(edit) => {
                    if placed.iter().any(|p| p.eq_ignore_ascii_case(name)) {
                        continue;
                    }
                    placed.push(name);
                    if let Some(v) = edit {
                        out.push((name.clone(), v.clone().into_bytes()));
                    }
                }
            }
        }
        for (name, edit) in &self.edits {
            if let (Some(v), false) = (edit, placed.iter().any(|p| p.eq_ignore_ascii_case(name))) {
                out.push((name.clone(), v.clone().into_bytes()));
            }
        }
        out
    }

    /// Whether `applied_to(base)` would differ from `base`, found without building it: an
    /// edit changes the map unless it removes an absent name or sets a name present once
    /// with that very value. Most requests carry none of the names only the router's
    /// filters set, so their removal is then no work at all.
    fn changes(&self, base: &[(String, Vec<u8>)]) -> bool {
        self.edits.iter().any(|(name, edit)| {
            let mut values = base
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice());
            match edit {
                None => values.next().is_some(),
                Some(v) => values.next() != Some(v.as_bytes()) || values.next().is_some(),
            }
        })
    }

    /// Makes the edits on `side`: with `base` (the map as it is now), one write of the whole
    /// map if anything changed; without, one call per edit. Returns the map as written when
    /// it changed and is known (`None`: unchanged, or not known).
    pub fn apply(
        &self,
        host: &mut dyn Host,
        side: Side,
        base: Option<&HeaderPairs>,
    ) -> HostResult<Option<HeaderPairs>> {
        // A name that is not UTF-8 was read lossily: writing it back would change it.
        let exact = base.filter(|b| b.iter().all(|(n, _)| !n.contains('\u{fffd}')));
        match exact {
            Some(base) => {
                if !self.changes(base) {
                    return Ok(None);
                }
                let new = self.applied_to(base);
                let written = match side {
                    Side::Request => host.set_request_headers(&new),
                    Side::Response => host.set_response_headers(&new),
                };
                match written {
                    Ok(()) => Ok(Some(new)),
                    // A host without whole-map writes: one call per edit.
                    Err(_) => self.apply(host, side, None).map(|_| Some(new)),
                }
            }
            None => {
                for (name, value) in &self.edits {
                    let absent = base.is_some_and(|b| !b.iter().any(|(n, _)| n == name));
                    if value.is_none() && absent {
                        continue;
                    }
                    match side {
                        Side::Request => host.set_request_header(name, value.as_deref())?,
                        Side::Response => host.set_response_header(name, value.as_deref())?,
                    }
                }
                Ok(base.map(|b| self.applied_to(b)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;

    fn map(pairs: &[(&str, &str)]) -> HeaderPairs {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn edits_keep_the_order_and_replace_every_value_of_a_name() {
        let base = map(&[
            (":path", "/v1/chat/completions"),
            ("authorization", "Bearer client"),
            ("cookie", "a"),
            ("accept-encoding", "gzip"),
            ("cookie", "b"),
        ]);
        let mut e = HeaderEdits::default();
        e.set("Cookie", Some("c"));
        e.set("accept-encoding", None);
        e.set("x-cluster", Some("one"));
        e.set("authorization", Some("Bearer first"));
        e.set("authorization", Some("Bearer provider"));
        e.set("x-absent", None);
        assert_eq!(
            e.applied_to(&base),
            map(&[
                (":path", "/v1/chat/completions"),
                ("authorization", "Bearer provider"),
                ("cookie", "c"),
                ("x-cluster", "one"),
            ])
        );
    }

    #[test]
    fn one_write_for_all_edits_none_when_nothing_changes() {
        let mut host = MockHost::with_request(&[(":path", "/v1/x"), ("a", "1")], b"");
        let base = host.request_headers().unwrap();
        let mut same = HeaderEdits::default();
        same.set("a", Some("1"));
        same.set("gone", None);
        assert_eq!(
            same.apply(&mut host, Side::Request, Some(&base)).unwrap(),
            None
        );
        let mut e = HeaderEdits::default();
        e.set("a", None);
        e.set("b", Some("2"));
        e.apply(&mut host, Side::Request, Some(&base)).unwrap();
        assert_eq!(host.header("a"), None);
        assert_eq!(host.header("b"), Some("2"));
        assert_eq!(host.header(":path"), Some("/v1/x"));
    }

    #[test]
    fn a_change_is_found_exactly_when_the_built_map_differs() {
        let base = map(&[("a", "1"), ("b", "2"), ("b", "3"), ("C", "4")]);
        let cases: [&[(&str, Option<&str>)]; 10] = [
            &[],
            &[("a", Some("1"))],
            &[("A", Some("1")), ("absent", None)],
            &[("a", Some("9"))],
            &[("a", None)],
            &[("b", Some("2"))],
            &[("b", None)],
            &[("c", Some("4"))],
            &[("new", Some("x"))],
            &[("a", Some("1")), ("c", None)],
        ];
        for edits in cases {
            let mut e = HeaderEdits::default();
            for (name, value) in edits {
                e.set(name, *value);
            }
            assert_eq!(e.changes(&base), e.applied_to(&base) != base, "{edits:?}");
        }
    }

    #[test]
    fn an_unknown_or_lossy_map_gets_one_call_per_edit() {
        let mut host = MockHost::with_request(&[("a", "1")], b"");
        let mut e = HeaderEdits::default();
        e.set("a", None);
        e.set("b", Some("2"));
        assert_eq!(e.apply(&mut host, Side::Request, None).unwrap(), None);
        assert_eq!((host.header("a"), host.header("b")), (None, Some("2")));
        // A name read lossily is never written back (the host keeps its own bytes).
        let lossy = vec![("x-\u{fffd}".to_owned(), b"v".to_vec())];
        let mut e = HeaderEdits::default();
        e.set("c", Some("3"));
        e.set("absent", None);
        let mut host = MockHost::default();
        e.apply(&mut host, Side::Response, Some(&lossy)).unwrap();
        assert_eq!(host.response_header("c"), Some("3"));
        assert!(host.response_headers.iter().all(|(k, _)| k != "x-\u{fffd}"));
    }
}
