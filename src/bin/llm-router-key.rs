//! llm-router-key: make client keys for the router's `clients.keys`, and hash existing ones.
//!
//! A native helper (not part of the .wasm). It prints no key other than the one `new` has
//! just made: a key given to `hash` is read from stdin, never from the arguments, and
//! arguments are never echoed in messages (one of them might be a key).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use llm_router::sha256::sha256_hex;

const USAGE: &str = "\
usage: llm-router-key hash          read one key on stdin, print its SHA-256 (lower-case hex)
       llm-router-key new [NAME]    make a random key; print it, its hash and a clients.keys entry
       llm-router-key --help

hash strips one trailing newline (\\n or \\r\\n) and nothing else, like
`printf %s \"$KEY\" | sha256sum`. NAME (default `client`): 1-64 of A-Z a-z 0-9 - _ . @,
no leading, trailing or double dot.
";

const KEY_PREFIX: &str = "sk-llmr-";
/// Random characters after the prefix: 40 × log2(62) ≈ 238 bits.
const KEY_RANDOM_CHARS: usize = 40;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A usage error (exit 2) or an I/O failure (exit 1), with the message for stderr.
enum Failure {
    Usage(String),
    Io(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (message, code) = match failure {
                Failure::Usage(m) => (m, 2),
                Failure::Io(m) => (m, 1),
            };
            // Nothing more to do if stderr itself fails.
            let _ = writeln!(io::stderr(), "llm-router-key: {message}");
            ExitCode::from(code)
        }
    }
}

fn run(args: &[&str]) -> Result<(), Failure> {
    match args {
        ["-h" | "--help" | "help"] => out(USAGE),
        ["hash"] => {
            let mut input = Vec::new();
            io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| Failure::Io(format!("cannot read stdin: {e}")))?;
            let key = strip_newline(&input);
            if key.is_empty() {
                return Err(Failure::Usage("empty key on stdin".into()));
            }
            if key.iter().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
                let _ = writeln!(
                    io::stderr(),
                    "llm-router-key: warning: the key holds whitespace or control characters; hashed as given"
                );
            }
            out(&format!("{}\n", sha256_hex(key)))
        }
        ["hash", ..] => Err(Failure::Usage(
            "hash takes the key on stdin, not as an argument: printf %s \"$KEY\" | llm-router-key hash"
                .into(),
        )),
        ["new"] => new_key("client"),
        ["new", name] => new_key(name),
        _ => Err(Failure::Usage(format!("bad arguments\n{USAGE}"))),
    }
}

fn new_key(name: &str) -> Result<(), Failure> {
    if !valid_name(name) {
        return Err(Failure::Usage(
            "NAME must be 1-64 of A-Z a-z 0-9 - _ . @, no leading, trailing or double dot".into(),
        ));
    }
    let mut urandom = File::open("/dev/urandom")
        .map_err(|e| Failure::Io(format!("cannot open /dev/urandom: {e}")))?;
    let random = sample_base62(&mut urandom, KEY_RANDOM_CHARS)
        .map_err(|e| Failure::Io(format!("cannot read /dev/urandom: {e}")))?;
    let key = format!("{KEY_PREFIX}{random}");
    let hash = sha256_hex(key.as_bytes());
    // `name` is validated: nothing in it needs escaping in JSON.
    out(&format!(
        "key:    {key}\nsha256: {hash}\nentry:  {{\"name\": \"{name}\", \"key_sha256\": \"{hash}\"}}\n"
    ))
}

fn out(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::Io(format!("cannot write stdout: {e}")))
}

/// `input` without one trailing `\r\n` or `\n`.
fn strip_newline(input: &[u8]) -> &[u8] {
    input
        .strip_suffix(b"\r\n")
        .or_else(|| input.strip_suffix(b"\n"))
        .unwrap_or(input)
}

/// A client name as the configuration accepts it: 1-64 of `A-Z a-z 0-9 - _ . @`, no leading,
/// trailing or double dot (it becomes a stat name and a shared-data key).
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
}

/// `n` base62 characters from the random bytes of `src`, by rejection sampling: each byte's
/// low 6 bits are a uniform value in 0..64; values 62 and 63 are dropped, so every character
/// is equally likely (no modulo bias).
fn sample_base62(src: &mut impl Read, n: usize) -> io::Result<String> {
    let mut chars = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while chars.len() < n {
        src.read_exact(&mut buf)?;
        for &b in &buf {
            if let Some(&c) = BASE62.get(usize::from(b & 0x3f)) {
                if chars.len() < n {
                    chars.push(char::from(c));
                }
            }
        }
    }
    Ok(chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_one_trailing_newline_only() {
        assert_eq!(strip_newline(b"sk-abc"), b"sk-abc");
        assert_eq!(strip_newline(b"sk-abc\n"), b"sk-abc");
        assert_eq!(strip_newline(b"sk-abc\r\n"), b"sk-abc");
        assert_eq!(strip_newline(b"sk-abc\n\n"), b"sk-abc\n");
        assert_eq!(strip_newline(b"sk-abc\r"), b"sk-abc\r");
        assert_eq!(strip_newline(b" sk-abc \n"), b" sk-abc ");
        assert_eq!(strip_newline(b"\n"), b"");
        assert_eq!(strip_newline(b""), b"");
    }

    #[test]
    fn names() {
        let long = "x".repeat(64);
        for ok in [
            "client",
            "team-a",
            "a",
            "svc_1.prod",
            "ops@example.com",
            &long,
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        let too_long = "x".repeat(65);
        for bad in [
            "",
            " team",
            "team a",
            "team/a",
            "t\u{e9}am",
            "a\"b",
            ".a",
            "a.",
            "a..b",
            &too_long,
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn base62_every_character_equally_often() {
        // All 256 byte values once: 248 are kept (4 per low-6-bit value 0..62), so each of
        // the 62 characters appears exactly 4 times; 62 and 63 are rejected.
        let bytes: Vec<u8> = (0..=255).collect();
        let s = sample_base62(&mut bytes.as_slice(), 248).unwrap();
        assert_eq!(s.len(), 248);
        for &c in BASE62 {
            assert_eq!(
                s.bytes().filter(|&b| b == c).count(),
                4,
                "{}",
                char::from(c)
            );
        }
    }

    #[test]
    fn base62_rejects_62_and_63() {
        let mut bytes = vec![62u8, 63, 0x7e, 0xff, 0, 61, 0x40, 0x7d];
        bytes.resize(64, 63);
        assert_eq!(sample_base62(&mut bytes.as_slice(), 4).unwrap(), "0z0z");
    }

    #[test]
    fn base62_fails_when_the_source_runs_dry() {
        let bytes = [63u8; 128];
        assert!(sample_base62(&mut bytes.as_slice(), 1).is_err());
    }

    #[test]
    fn arguments_are_never_echoed() {
        let cases: [&[&str]; 4] = [
            &["hash", "sk-secret"],
            &["sk-secret"],
            &["new", "sk secret"],
            &["new", "a", "sk-secret"],
        ];
        for args in cases {
            match run(args) {
                Err(Failure::Usage(m)) => assert!(!m.contains("secret"), "{m}"),
                _ => panic!("{args:?} accepted"),
            }
        }
    }

    #[test]
    fn new_key_shape_and_hash() {
        let mut urandom = File::open("/dev/urandom").unwrap();
        let random = sample_base62(&mut urandom, KEY_RANDOM_CHARS).unwrap();
        assert_eq!(random.len(), KEY_RANDOM_CHARS);
        assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()));
        // The same as `printf %s sk-abc | sha256sum`.
        assert_eq!(
            sha256_hex(b"sk-abc"),
            "1460db1b6902f8b1fc2a40d9381a24d0fd22c3bc1b2c6f999c521da73776fbe0"
        );
    }
}
