//! Splitting SurrealQL text into statements.
//!
//! A `;` ends a statement only outside strings (`'…'`, `"…"` with backslash escapes),
//! quoted identifiers (`` `…` ``, `⟨…⟩`), comments (`--`, `//`, `#`, `/* … */`) and
//! `{ … }` blocks, so `DEFINE FUNCTION` and `DEFINE EVENT` bodies stay whole.

use std::iter::Peekable;
use std::str::CharIndices;

/// One statement of a migration, with the 1-based line it starts on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Statement {
    /// The statement's text without the terminating `;` and without surrounding comments.
    pub text: String,
    /// The line of the file on which the statement starts.
    pub line: usize,
}

/// Why a piece of SurrealQL could not be split.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// A string or quoted identifier opened on `line` is never closed.
    #[error("unterminated {what} starting on line {line}")]
    UnterminatedString {
        /// `string` or `quoted identifier`.
        what: &'static str,
        /// Line of the opening quote.
        line: usize,
    },
    /// A `/*` comment opened on `line` is never closed.
    #[error("unterminated block comment starting on line {line}")]
    UnterminatedComment {
        /// Line of the `/*`.
        line: usize,
    },
    /// A `{` opened on `line` is never closed.
    #[error("unclosed `{{` opened on line {line}")]
    UnclosedBlock {
        /// Line of the unmatched `{`.
        line: usize,
    },
    /// A `}` on `line` closes nothing.
    #[error("unexpected `}}` on line {line}")]
    UnexpectedClose {
        /// Line of the stray `}`.
        line: usize,
    },
}

/// Splits `source` into statements; `first_line` is the file line on which `source` starts.
pub fn split_statements(source: &str, first_line: usize) -> Result<Vec<Statement>, SplitError> {
    Splitter {
        source,
        chars: source.char_indices().peekable(),
        line: first_line,
    }
    .run()
}

struct Splitter<'a> {
    source: &'a str,
    chars: Peekable<CharIndices<'a>>,
    line: usize,
}

impl Splitter<'_> {
    fn run(mut self) -> Result<Vec<Statement>, SplitError> {
        let mut statements = Vec::new();
        // Byte range and line of the current statement's significant text.
        let mut current: Option<(usize, usize, usize)> = None;
        let mut open_braces: Vec<usize> = Vec::new();

        while let Some((at, c)) = self.chars.next() {
            let line_at_start = self.line;
            let mut significant = true;
            match c {
                '\n' => {
                    self.line += 1;
                    significant = false;
                }
                c if c.is_whitespace() => significant = false,
                '-' if self.next_is('-') => {
                    self.skip_line();
                    significant = false;
                }
                '/' if self.next_is('/') => {
                    self.skip_line();
                    significant = false;
                }
                '#' => {
                    self.skip_line();
                    significant = false;
                }
                '/' if self.next_is('*') => {
                    self.skip_block_comment()?;
                    significant = false;
                }
                '\'' | '"' => self.skip_quoted(c, true, "string")?,
                '`' => self.skip_quoted('`', true, "quoted identifier")?,
                '⟨' => self.skip_quoted('⟩', true, "quoted identifier")?,
                '{' => open_braces.push(self.line),
                '}' => {
                    let Some(_) = open_braces.pop() else {
                        return Err(SplitError::UnexpectedClose { line: self.line });
                    };
                }
                ';' if open_braces.is_empty() => {
                    if let Some((start, end, line)) = current.take() {
                        statements.push(self.statement(start, end, line));
                    }
                    significant = false;
                }
                _ => {}
            }
            if significant {
                // Everything consumed since `at` (a whole string, say) belongs to the statement.
                let end = self.position();
                match &mut current {
                    Some((_, stmt_end, _)) => *stmt_end = end,
                    None => current = Some((at, end, line_at_start)),
                }
            }
        }
        if let Some(line) = open_braces.first() {
            return Err(SplitError::UnclosedBlock { line: *line });
        }
        if let Some((start, end, line)) = current {
            statements.push(self.statement(start, end, line));
        }
        Ok(statements)
    }

    fn statement(&self, start: usize, end: usize, line: usize) -> Statement {
        Statement {
            text: self.source[start..end].to_owned(),
            line,
        }
    }

    /// Byte offset of the next unread character.
    fn position(&mut self) -> usize {
        self.chars
            .peek()
            .map_or(self.source.len(), |(index, _)| *index)
    }

    fn next_is(&mut self, expected: char) -> bool {
        self.chars.peek().is_some_and(|(_, c)| *c == expected)
    }

    fn skip_line(&mut self) {
        while let Some((_, c)) = self.chars.peek() {
            if *c == '\n' {
                return;
            }
            self.chars.next();
        }
    }

    fn skip_block_comment(&mut self) -> Result<(), SplitError> {
        let start_line = self.line;
        self.chars.next(); // the '*'
        while let Some((_, c)) = self.chars.next() {
            match c {
                '\n' => self.line += 1,
                '*' if self.next_is('/') => {
                    self.chars.next();
                    return Ok(());
                }
                _ => {}
            }
        }
        Err(SplitError::UnterminatedComment { line: start_line })
    }

    fn skip_quoted(
        &mut self,
        close: char,
        escapes: bool,
        what: &'static str,
    ) -> Result<(), SplitError> {
        let start_line = self.line;
        while let Some((_, c)) = self.chars.next() {
            match c {
                '\n' => self.line += 1,
                '\\' if escapes => {
                    if let Some((_, '\n')) = self.chars.next() {
                        self.line += 1;
                    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(source: &str) -> Vec<(String, usize)> {
        split_statements(source, 1)
            .expect("splits")
            .into_iter()
            .map(|s| (s.text, s.line))
            .collect()
    }

    fn owned(expected: &[(&str, usize)]) -> Vec<(String, usize)> {
        expected
            .iter()
            .map(|(t, l)| ((*t).to_owned(), *l))
            .collect()
    }

    #[test]
    fn table_of_cases() {
        let cases: &[(&str, &[(&str, usize)])] = &[
            ("", &[]),
            ("  ;; ; \n", &[]),
            (
                "DEFINE TABLE a;DEFINE TABLE b",
                &[("DEFINE TABLE a", 1), ("DEFINE TABLE b", 1)],
            ),
            (
                "CREATE a SET s = 'x;y';\nCREATE b",
                &[("CREATE a SET s = 'x;y'", 1), ("CREATE b", 2)],
            ),
            (
                r#"CREATE a SET s = "say \"hi;\"";"#,
                &[(r#"CREATE a SET s = "say \"hi;\"""#, 1)],
            ),
            (
                r"CREATE a SET s = 'it\'s; ok';",
                &[(r"CREATE a SET s = 'it\'s; ok'", 1)],
            ),
            ("-- it's a comment; really\nCREATE a;", &[("CREATE a", 2)]),
            (
                "// don't; split\n# nor 'this;\nCREATE a;",
                &[("CREATE a", 3)],
            ),
            ("/* a 'quote; in\n a block */ CREATE a;", &[("CREATE a", 2)]),
            ("CREATE a; -- trailing; comment\n", &[("CREATE a", 1)]),
            (
                "DEFINE FUNCTION fn::f($a: int) {\n  LET $b = $a + 1;\n  RETURN $b;\n};\nCREATE x;",
                &[
                    (
                        "DEFINE FUNCTION fn::f($a: int) {\n  LET $b = $a + 1;\n  RETURN $b;\n}",
                        1,
                    ),
                    ("CREATE x", 5),
                ],
            ),
            (
                "DEFINE EVENT e ON t WHEN true THEN { IF $x { CREATE a; } ELSE { CREATE b; }; };",
                &[(
                    "DEFINE EVENT e ON t WHEN true THEN { IF $x { CREATE a; } ELSE { CREATE b; }; }",
                    1,
                )],
            ),
            (
                "CREATE a CONTENT { s: '}' , t: \"{\" };",
                &[("CREATE a CONTENT { s: '}' , t: \"{\" }", 1)],
            ),
            (
                "SELECT * FROM `we;ird`; SELECT * FROM ⟨odd;one⟩",
                &[
                    ("SELECT * FROM `we;ird`", 1),
                    ("SELECT * FROM ⟨odd;one⟩", 1),
                ],
            ),
            (
                "\n\n  CREATE a SET x = 'multi\nline';\nCREATE b;",
                &[("CREATE a SET x = 'multi\nline'", 3), ("CREATE b", 5)],
            ),
            (
                "'starts with a string; here' ;",
                &[("'starts with a string; here'", 1)],
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(texts(source), owned(expected), "source: {source:?}");
        }
    }

    #[test]
    fn first_line_offsets_lines() {
        let got = split_statements("\nCREATE a;", 10).expect("splits");
        assert_eq!(got[0].line, 11);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, SplitError)] = &[
            (
                "CREATE a;\nCREATE b SET s = 'open",
                SplitError::UnterminatedString {
                    what: "string",
                    line: 2,
                },
            ),
            (
                "\n\nSELECT `x",
                SplitError::UnterminatedString {
                    what: "quoted identifier",
                    line: 3,
                },
            ),
            (
                "CREATE a;\n/* never\nclosed",
                SplitError::UnterminatedComment { line: 2 },
            ),
            (
                "DEFINE FUNCTION fn::f() {\n RETURN 1;\n",
                SplitError::UnclosedBlock { line: 1 },
            ),
            ("CREATE a;\n}", SplitError::UnexpectedClose { line: 2 }),
        ];
        for (source, expected) in cases {
            assert_eq!(
                split_statements(source, 1).as_ref(),
                Err(expected),
                "source: {source:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(source in "\\PC*") {
            let _ = split_statements(&source, 1);
        }

        #[test]
        fn never_panics_on_surrealql_alphabet(source in "[-a-z;'\"`{}/*#\\\\\n ⟨⟩]{0,64}") {
            if let Ok(statements) = split_statements(&source, 1) {
                for statement in statements {
                    proptest::prop_assert!(!statement.text.trim().is_empty());
                    proptest::prop_assert!(source.contains(&statement.text));
                }
            }
        }
    }
}
