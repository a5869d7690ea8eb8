//! Splitting SurrealQL text into statements.
//!
//! A `;` ends a statement only outside strings, quoted identifiers, regex literals and
//! comments (see [`crate::lexer`] for every form) and outside `{ … }` blocks, so
//! `DEFINE FUNCTION` and `DEFINE EVENT` bodies stay whole.

use crate::lexer::{Kind, Token, tokens};

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
    let mut statements = Vec::new();
    // The current statement's first and last token, and the `{` still open.
    let mut current: Option<(Token, Token)> = None;
    let mut open_braces: Vec<usize> = Vec::new();
    let finish = |statements: &mut Vec<Statement>, (first, last): (Token, Token)| {
        statements.push(Statement {
            text: source[first.start..last.end].to_owned(),
            line: first.line,
        });
    };
    for token in tokens(source, first_line)? {
        match token.kind {
            Kind::Punct(';') if open_braces.is_empty() => {
                if let Some(statement) = current.take() {
                    finish(&mut statements, statement);
                }
                continue;
            }
            Kind::Punct('{') => open_braces.push(token.line),
            Kind::Punct('}') if open_braces.pop().is_none() => {
                return Err(SplitError::UnexpectedClose { line: token.line });
            }
            _ => {}
        }
        current = Some(match current {
            Some((first, _)) => (first, token),
            None => (token, token),
        });
    }
    if let Some(line) = open_braces.first() {
        return Err(SplitError::UnclosedBlock { line: *line });
    }
    if let Some(statement) = current {
        finish(&mut statements, statement);
    }
    Ok(statements)
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
