//! SurrealQL's lexical forms, as far as flotilla needs them: where strings, quoted
//! identifiers, regex literals and comments begin and end, so that a `;` or a keyword inside
//! one is never taken for code. The statement splitter and the destructive lint both read
//! source through this, so they cannot disagree about what is code.
//!
//! Forms: `'…'` and `"…"` strings with backslash escapes (also prefixed: `r'…'`, `d'…'`,
//! `u'…'`, `s'…'`, `b"…"` — the prefix is a word, the string follows); `` `…` `` and `⟨…⟩`
//! identifiers with escapes; `/…/` regex literals where a value is expected (after an
//! operator, a `(`, a `,`, or a keyword like `RETURN`; after a value `/` divides); comments
//! `-- …`, `// …`, `# …` and `/* … */` (which do not nest, as in SurrealDB).

use crate::split::SplitError;

/// One token: a word, a quoted string or identifier, a regex literal, or one character of
/// punctuation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Letters, digits and `_`, with `::` joining path segments (`string::replace` is one
    /// word, so its `replace` is not the `REPLACE` keyword).
    Word,
    /// A string or a quoted identifier.
    Quoted,
    /// A regex literal.
    Regex,
    /// Any other character that is not white space.
    Punct(char),
}

/// A token and where it is: byte range and line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) line: usize,
}

/// Keywords after which a value — so a regex literal, not a division — comes.
const BEFORE_A_VALUE: &[&str] = &[
    "RETURN",
    "THEN",
    "ELSE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "INSIDE",
    "CONTAINS",
    "CONTAINSALL",
    "CONTAINSANY",
    "CONTAINSNONE",
    "ALLINSIDE",
    "ANYINSIDE",
    "NONEINSIDE",
    "IS",
    "VALUE",
    "ASSERT",
    "WHERE",
    "IF",
    "THROW",
    "DEFAULT",
    "SELECT",
    "COMPUTED",
    "WHEN",
];

/// The tokens of `source`, whose first line is `first_line` of its file.
pub(crate) fn tokens(source: &str, first_line: usize) -> Result<Vec<Token>, SplitError> {
    let mut lexer = Lexer {
        source,
        bytes: source.as_bytes(),
        at: 0,
        line: first_line,
    };
    let mut tokens: Vec<Token> = Vec::new();
    while let Some(token) = lexer.next(&tokens)? {
        tokens.push(token);
    }
    Ok(tokens)
}

struct Lexer<'a> {
    source: &'a str,
    bytes: &'a [u8],
    at: usize,
    line: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.source[self.at..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        let mut chars = self.source[self.at..].chars();
        chars.next();
        chars.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// The next token after those `before` it, skipping white space and comments.
    fn next(&mut self, before: &[Token]) -> Result<Option<Token>, SplitError> {
        loop {
            let Some(c) = self.peek() else {
                return Ok(None);
            };
            let start = self.at;
            let line = self.line;
            let token = |kind, end| Token {
                kind,
                start,
                end,
                line,
            };
            match (c, self.peek_second()) {
                (c, _) if c.is_whitespace() => {
                    self.bump();
                }
                ('-', Some('-')) | ('/', Some('/')) | ('#', _) => self.skip_line(),
                ('/', Some('*')) => self.skip_block_comment()?,
                ('\'' | '"', _) => {
                    self.bump();
                    self.skip_quoted(c, "string", line)?;
                    return Ok(Some(token(Kind::Quoted, self.at)));
                }
                ('`', _) | ('⟨', _) => {
                    self.bump();
                    let close = if c == '`' { '`' } else { '⟩' };
                    self.skip_quoted(close, "quoted identifier", line)?;
                    return Ok(Some(token(Kind::Quoted, self.at)));
                }
                ('/', _) if value_expected(self.source, before) && self.skip_regex() => {
                    return Ok(Some(token(Kind::Regex, self.at)));
                }
                // A parameter is one word, `$` included: `$value` is no `VALUE` keyword.
                ('$', Some(next)) if is_word_char(next) => {
                    self.bump();
                    self.skip_word();
                    return Ok(Some(token(Kind::Word, self.at)));
                }
                (c, _) if is_word_char(c) => {
                    self.skip_word();
                    return Ok(Some(token(Kind::Word, self.at)));
                }
                (c, _) => {
                    self.bump();
                    return Ok(Some(token(Kind::Punct(c), self.at)));
                }
            }
        }
    }

    /// A line comment ends where SurrealDB ends one: at a line feed, a carriage return, or a
    /// Unicode line or paragraph separator or next-line character.
    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            if matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{85}') {
                return;
            }
            self.bump();
        }
    }

    fn skip_block_comment(&mut self) -> Result<(), SplitError> {
        let start_line = self.line;
        self.bump();
        self.bump();
        while let Some(c) = self.bump() {
            if c == '*' && self.peek() == Some('/') {
                self.bump();
                return Ok(());
            }
        }
        Err(SplitError::UnterminatedComment { line: start_line })
    }

    fn skip_quoted(
        &mut self,
        close: char,
        what: &'static str,
        start_line: usize,
    ) -> Result<(), SplitError> {
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    self.bump();
                }
                c if c == close => return Ok(()),
                _ => {}
            }
        }
        Err(SplitError::UnterminatedString {
            what,
            line: start_line,
        })
    }

    /// Consumes a regex literal if one starts here (a closing `/` before the end of the
    /// line); otherwise consumes nothing and answers `false`.
    fn skip_regex(&mut self) -> bool {
        let rest = &self.bytes[self.at + 1..];
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b'\n' => return false,
                b'\\' => i += 2,
                b'/' => {
                    self.at += i + 2;
                    return true;
                }
                _ => i += 1,
            }
        }
        false
    }

    fn skip_word(&mut self) {
        loop {
            match self.peek() {
                Some(c) if is_word_char(c) => {
                    self.bump();
                }
                Some(':') if self.peek_second() == Some(':') => {
                    let after = self.source[self.at + 2..].chars().next();
                    if !after.is_some_and(is_word_char) {
                        return;
                    }
                    self.bump();
                    self.bump();
                }
                _ => return,
            }
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether a value (so possibly a regex literal) may start after the tokens `before` it.
fn value_expected(source: &str, before: &[Token]) -> bool {
    let Some(previous) = before.last() else {
        return true;
    };
    match previous.kind {
        Kind::Quoted | Kind::Regex => false,
        Kind::Punct(c) => !matches!(c, ')' | ']' | '}'),
        Kind::Word => {
            // After a `.` a word is a field name (`$this.value / 2`), not a keyword.
            let field = before.len() >= 2 && before[before.len() - 2].kind == Kind::Punct('.');
            let word = &source[previous.start..previous.end];
            !field
                && BEFORE_A_VALUE
                    .iter()
                    .any(|keyword| word.eq_ignore_ascii_case(keyword))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<(Kind, &str)> {
        tokens(source, 1)
            .expect("lexes")
            .into_iter()
            .map(|t| (t.kind, &source[t.start..t.end]))
            .collect()
    }

    #[test]
    fn regex_literals_where_a_value_goes_and_division_elsewhere() {
        let lexed = kinds("RETURN string::matches(x, /[;']/) AND $v / 2 / 1 = /a\\/b/");
        let regexes: Vec<&str> = lexed
            .iter()
            .filter(|(k, _)| *k == Kind::Regex)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(regexes, ["/[;']/", "/a\\/b/"]);
        assert!(lexed.contains(&(Kind::Word, "string::matches")));
        assert_eq!(
            lexed.iter().filter(|(k, _)| *k == Kind::Punct('/')).count(),
            2,
            "{lexed:?}"
        );
    }

    #[test]
    fn comments_strings_and_identifiers_hide_their_contents() {
        let lexed = kinds(
            "CREATE a SET b = r'c;d', e = \"f\\\"g\" // DELETE x\n# REMOVE y\n/* DROP */ `h\\`i` ⟨j\\⟩k⟩",
        );
        let words: Vec<&str> = lexed
            .iter()
            .filter(|(k, _)| *k == Kind::Word)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(words, ["CREATE", "a", "SET", "b", "r", "e"]);
        assert_eq!(lexed.iter().filter(|(k, _)| *k == Kind::Quoted).count(), 4);
    }
}
