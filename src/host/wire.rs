//! The proxy-wasm wire formats the host binding reads and writes: header maps and property
//! paths. Pure and bounds-checked, so a malformed or hostile map (header bytes from a client
//! or a provider, lengths that do not add up) is an error value, never a panic. Header
//! values stay raw bytes: they may not be UTF-8.

/// Header pairs as the host gave them: the name (as UTF-8, lossy for bytes that are not) and
/// the value's raw bytes.
pub type HeaderPairs = Vec<(String, Vec<u8>)>;

/// Decodes a serialized header map: a little-endian u32 count, then a (name length, value
/// length) pair of u32 for each header, then each name and value followed by a NUL byte.
/// `None` when the lengths do not fit the bytes.
pub fn decode_map(bytes: &[u8]) -> Option<HeaderPairs> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = usize::try_from(read_u32(bytes, 0)?).ok()?;
    let table_end = count.checked_mul(8)?.checked_add(4)?;
    if table_end > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = table_end;
    for n in 0..count {
        let name_len = usize::try_from(read_u32(bytes, 4 + n * 8)?).ok()?;
        let value_len = usize::try_from(read_u32(bytes, 8 + n * 8)?).ok()?;
        let name = take(bytes, &mut at, name_len)?;
        let value = take(bytes, &mut at, value_len)?;
        pairs.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    Some(pairs)
}

/// Serializes header pairs in the format [`decode_map`] reads (for local replies).
pub fn encode_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    encode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
}

/// [`encode_map`] of pairs with raw values (a whole header map written back).
pub fn encode_map_bytes(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    encode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())))
}

fn encode<'p>(pairs: impl Iterator<Item = (&'p [u8], &'p [u8])> + Clone) -> Vec<u8> {
    let size = 4 + pairs
        .clone()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&len_u32(pairs.clone().count()).to_le_bytes());
    for (name, value) in pairs.clone() {
        bytes.extend_from_slice(&len_u32(name.len()).to_le_bytes());
        bytes.extend_from_slice(&len_u32(value.len()).to_le_bytes());
    }
    for (name, value) in pairs {
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(value);
        bytes.push(0);
    }
    bytes
}

/// A property path (`["response", "code"]`) as the host reads it: segments joined by NUL.
pub fn encode_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

/// The value of header `name` (ASCII case-insensitive) when it is valid UTF-8; a value that
/// is not counts as absent (see [`header_bytes`] to tell the two apart).
pub fn header_value<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h str> {
    header_bytes(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}

/// The raw value of header `name` (ASCII case-insensitive), first one.
pub fn header_bytes<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(<[u8; 4]>::try_from(word).ok()?))
}

/// The next `len` bytes at `*at`, then skips them and their NUL terminator.
fn take<'b>(bytes: &'b [u8], at: &mut usize, len: usize) -> Option<&'b [u8]> {
    let end = at.checked_add(len)?;
    let slice = bytes.get(*at..end)?;
    *at = end.checked_add(1)?;
    Some(slice)
}

/// Lengths in a map are u32; a longer item (never built by the router) is cut to zero.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            b.extend_from_slice(k);
            b.push(0);
            b.extend_from_slice(v);
            b.push(0);
        }
        b
    }

    #[test]
    fn decodes_values_as_raw_bytes_and_names_lossily() {
        let bytes = raw(&[
            (b":path", b"/v1/chat/completions"),
            (b"user-agent", b"\xff\xfe"),
            (b"x-\xff", b"ok"),
            (b"empty", b""),
        ]);
        let map = decode_map(&bytes).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map[1], ("user-agent".to_owned(), vec![0xff, 0xfe]));
        assert_eq!(map[2].0, "x-\u{fffd}");
        assert_eq!(map[3], ("empty".to_owned(), Vec::new()));
        assert_eq!(header_value(&map, "USER-AGENT"), None);
        assert_eq!(header_bytes(&map, "user-agent"), Some(&[0xff, 0xfe][..]));
        assert_eq!(header_value(&map, ":path"), Some("/v1/chat/completions"));
    }

    #[test]
    fn round_trips_what_it_encodes() {
        let pairs = [("content-type", "application/json"), ("retry-after", "3")];
        let map = decode_map(&encode_map(&pairs)).unwrap();
        let back: Vec<(&str, &[u8])> = map
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            back,
            vec![
                ("content-type", &b"application/json"[..]),
                ("retry-after", &b"3"[..])
            ]
        );
        assert_eq!(decode_map(&[]), Some(Vec::new()));
        let raw_values = vec![
            ("a".to_owned(), vec![0xff, 0]),
            ("b".to_owned(), Vec::new()),
        ];
        assert_eq!(decode_map(&encode_map_bytes(&raw_values)), Some(raw_values));
        assert_eq!(encode_path(&["response", "code"]), b"response\0code");
    }

    #[test]
    fn refuses_lengths_that_do_not_fit_at_every_truncation() {
        let bytes = raw(&[(b"a", b"bb"), (b"ccc", b"\x80")]);
        for cut in 1..bytes.len() {
            // A map cut short anywhere before its last terminator is refused or, cut exactly
            // at the last terminator, still whole.
            let got = decode_map(&bytes[..cut]);
            assert!(
                got.is_none() || cut == bytes.len() - 1,
                "cut {cut}: {got:?}"
            );
        }
        // A count far beyond the bytes (no overflow, no huge allocation).
        assert_eq!(decode_map(&u32::MAX.to_le_bytes()), None);
        let mut lying = raw(&[(b"a", b"b")]);
        lying[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_map(&lying), None);
    }
}
