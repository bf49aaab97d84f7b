//! Shell-style globs for model names (`gpt-4o*`, `claude-?-opus`), parsed once at load.

/// A parsed glob: `*` matches any run of characters, `?` exactly one, everything else itself.
/// Matching is case-sensitive, as model ids are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    kind: GlobKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobKind {
    Exact,
    /// `prefix*`: the common case, answered without the general matcher.
    Prefix(String),
    General(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Char(char),
    AnyOne,
    AnyRun,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let wild = pattern.contains(['*', '?']);
        let kind = if !wild {
            GlobKind::Exact
        } else if let Some(prefix) = pattern
            .strip_suffix('*')
            .filter(|p| !p.contains(['*', '?']))
        {
            GlobKind::Prefix(prefix.to_owned())
        } else {
            GlobKind::General(
                pattern
                    .chars()
                    .map(|c| match c {
                        '*' => Piece::AnyRun,
                        '?' => Piece::AnyOne,
                        c => Piece::Char(c),
                    })
                    .collect(),
            )
        };
        Glob {
            pattern: pattern.to_owned(),
            kind,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn is_literal(&self) -> bool {
        self.kind == GlobKind::Exact
    }

    pub fn matches(&self, text: &str) -> bool {
        match &self.kind {
            GlobKind::Exact => self.pattern == text,
            GlobKind::Prefix(p) => text.starts_with(p.as_str()),
            GlobKind::General(pieces) => matches_pieces(pieces, text),
        }
    }
}

/// Iterative wildcard match with single backtrack point: linear in practice, no recursion.
fn matches_pieces(pieces: &[Piece], text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < chars.len() {
        match pieces.get(p) {
            Some(Piece::AnyRun) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Piece::AnyOne) => {
                p += 1;
                t += 1;
            }
            Some(Piece::Char(c)) if chars.get(t) == Some(c) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pieces[p.min(pieces.len())..]
        .iter()
        .all(|piece| *piece == Piece::AnyRun)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_general() {
        assert!(Glob::new("gpt-4o").matches("gpt-4o"));
        assert!(!Glob::new("gpt-4o").matches("gpt-4o-mini"));
        assert!(Glob::new("gpt-4o*").matches("gpt-4o-mini"));
        assert!(Glob::new("gpt-4o*").matches("gpt-4o"));
        assert!(!Glob::new("gpt-4o*").matches("gpt-4"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("claude-*-opus").matches("claude-3-opus"));
        assert!(Glob::new("claude-*-opus").matches("claude-3-5-opus"));
        assert!(!Glob::new("claude-*-opus").matches("claude-3-sonnet"));
        assert!(Glob::new("claude-?-opus").matches("claude-3-opus"));
        assert!(!Glob::new("claude-?-opus").matches("claude-35-opus"));
        assert!(Glob::new("*mini*").matches("gpt-4o-mini-2024"));
        assert!(Glob::new("a*b*c").matches("aXbYbZc"));
        assert!(!Glob::new("a*b*c").matches("aXbYbZ"));
        assert!(Glob::new("模型-*").matches("模型-大"));
        assert!(Glob::new("?").matches("é"));
    }

    #[test]
    fn literal_detection() {
        assert!(Glob::new("gpt-4o").is_literal());
        assert!(!Glob::new("gpt-*").is_literal());
        assert_eq!(Glob::new("x*").as_str(), "x*");
    }
}
