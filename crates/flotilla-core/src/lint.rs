//! Finding statements that destroy data or definitions, so an environment that forbids
//! destructive changes can refuse them before anything runs.

use std::path::PathBuf;

use crate::migration::Migration;
use crate::version::Version;

/// One destructive statement in a migration's up section.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The migration.
    pub version: Version,
    /// Its file.
    pub file: PathBuf,
    /// 1-based index of the statement in the up section.
    pub statement: usize,
    /// Line of the statement in the file.
    pub line: usize,
    /// What makes it destructive, e.g. `REMOVE TABLE` or `DEFINE … OVERWRITE`.
    pub rule: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "migration {} statement {} ({}:{}) is destructive: {}",
            self.version,
            self.statement,
            self.file.display(),
            self.line,
            self.rule
        )
    }
}

/// The destructive statements of `migration`'s up section.
///
/// Destructive: any `REMOVE …` (table, field, index, event, function, param, analyzer,
/// access, user, namespace, database, …); `DELETE`; `DEFINE … OVERWRITE` (replaces a
/// definition); `DEFINE TABLE … DROP` (discards writes); `UPDATE`/`UPSERT` with `UNSET`,
/// `CONTENT` or `REPLACE` (removes fields or replaces whole records); `ALTER … DROP`; and a
/// `DELETE` or `REMOVE` nested in any statement that is not itself a `DEFINE` (whose bodies
/// run later, not now). Words inside strings and comments do not count.
pub fn destructive(migration: &Migration) -> Vec<Finding> {
    migration
        .up
        .iter()
        .enumerate()
        .filter_map(|(index, statement)| {
            rule_for(&statement.text).map(|rule| Finding {
                version: migration.version.clone(),
                file: migration.path.clone(),
                statement: index + 1,
                line: statement.line,
                rule,
            })
        })
        .collect()
}

fn rule_for(text: &str) -> Option<String> {
    let words = keywords(text);
    let first = words.first()?.as_str();
    let has = |w: &str| words.iter().any(|word| word == w);
    match first {
        "REMOVE" => Some(
            format!("REMOVE {}", words.get(1).map_or("", String::as_str))
                .trim_end()
                .to_owned(),
        ),
        "DELETE" => Some("DELETE".to_owned()),
        "DEFINE" if has("OVERWRITE") => {
            Some("DEFINE … OVERWRITE replaces an existing definition".to_owned())
        }
        "DEFINE" if words.get(1).is_some_and(|w| w == "TABLE") && has("DROP") => {
            Some("DEFINE TABLE … DROP discards the table's records".to_owned())
        }
        "DEFINE" => None,
        "UPDATE" | "UPSERT" if has("UNSET") => Some(format!("{first} … UNSET removes fields")),
        "UPDATE" | "UPSERT" if has("CONTENT") || has("REPLACE") => {
            Some(format!("{first} … CONTENT/REPLACE replaces whole records"))
        }
        "ALTER" if has("DROP") => Some("ALTER … DROP".to_owned()),
        _ if has("DELETE") => Some("DELETE inside a statement".to_owned()),
        _ if has("REMOVE") => Some("REMOVE inside a statement".to_owned()),
        _ => None,
    }
}

/// The statement's words, uppercased, skipping strings, quoted identifiers and comments.
fn keywords(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    let flush = |word: &mut String, words: &mut Vec<String>| {
        if !word.is_empty() {
            words.push(std::mem::take(word).to_ascii_uppercase());
        }
    };
    while let Some(c) = chars.next() {
        match c {
            c if c.is_ascii_alphanumeric() || c == '_' => word.push(c),
            '\'' | '"' | '`' | '⟨' => {
                flush(&mut word, &mut words);
                let close = if c == '⟨' { '⟩' } else { c };
                while let Some(inner) = chars.next() {
                    if inner == '\\' {
                        chars.next();
                    } else if inner == close {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                flush(&mut word, &mut words);
                for inner in chars.by_ref() {
                    if inner == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut word, &mut words);
                chars.next();
                let mut previous = ' ';
                for inner in chars.by_ref() {
                    if previous == '*' && inner == '/' {
                        break;
                    }
                    previous = inner;
                }
            }
            _ => flush(&mut word, &mut words),
        }
    }
    flush(&mut word, &mut words);
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_statements() {
        let cases: &[(&str, Option<&str>)] = &[
            ("REMOVE TABLE user", Some("REMOVE TABLE")),
            ("remove field email ON user", Some("REMOVE FIELD")),
            ("REMOVE INDEX idx ON user", Some("REMOVE INDEX")),
            ("REMOVE NAMESPACE prod", Some("REMOVE NAMESPACE")),
            ("DELETE user WHERE active = false", Some("DELETE")),
            (
                "DEFINE FIELD OVERWRITE email ON user TYPE string",
                Some("DEFINE … OVERWRITE replaces an existing definition"),
            ),
            (
                "DEFINE TABLE logs DROP",
                Some("DEFINE TABLE … DROP discards the table's records"),
            ),
            (
                "UPDATE user UNSET legacy",
                Some("UPDATE … UNSET removes fields"),
            ),
            (
                "UPSERT user:1 CONTENT { name: 'x' }",
                Some("UPSERT … CONTENT/REPLACE replaces whole records"),
            ),
            ("IF true { DELETE user }", Some("DELETE inside a statement")),
            ("DEFINE TABLE user SCHEMAFULL", None),
            (
                "DEFINE EVENT e ON user WHEN $event = 'DELETE' THEN { DELETE audit WHERE user = $before.id }",
                None,
            ),
            (
                "CREATE note SET text = 'please DELETE me; REMOVE TABLE x'",
                None,
            ),
            ("UPDATE user SET name = 'x' -- not a DELETE", None),
            ("UPDATE user MERGE { a: 1 }", None),
            ("SELECT * FROM user", None),
        ];
        for (text, expected) in cases {
            assert_eq!(rule_for(text).as_deref(), *expected, "{text}");
        }
    }

    #[test]
    fn findings_name_migration_statement_and_line() {
        let migration = Migration::parse(
            "m/0007_cleanup.surql",
            "-- @up\nDEFINE TABLE keep;\n\nREMOVE FIELD legacy ON user;\n",
        )
        .expect("valid");
        let findings = destructive(&migration);
        assert_eq!(findings.len(), 1);
        let finding = &findings[0];
        assert_eq!((finding.statement, finding.line), (2, 4));
        let message = finding.to_string();
        assert!(
            message.contains("0007")
                && message.contains("m/0007_cleanup.surql:4")
                && message.contains("REMOVE FIELD"),
            "{message}"
        );
    }
}
