//! Finding statements that destroy data or definitions, so an environment that forbids
//! destructive changes can refuse them before anything runs.
//!
//! Up sections are judged statement by statement. Down sections run too — during
//! auto-rollback — but a down that removes what its own up defined or created is an undo, not
//! a loss: only down statements that destroy something else are findings.

use std::path::PathBuf;

use crate::lexer::{Kind, Token, tokens};
use crate::migration::Migration;
use crate::split::Statement;
use crate::version::Version;

/// Which section of a migration a finding is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// Applied by a deploy.
    Up,
    /// Run by a rollback (and auto-rollback).
    Down,
}

/// One destructive statement of a migration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The migration.
    pub version: Version,
    /// Its file (the down file of a pair, for a down finding).
    pub file: PathBuf,
    /// Up or down.
    pub section: Section,
    /// 1-based index of the statement in its section.
    pub statement: usize,
    /// Line of the statement in the file.
    pub line: usize,
    /// What makes it destructive, e.g. `REMOVE TABLE` or `DEFINE … OVERWRITE`.
    pub rule: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let section = match self.section {
            Section::Up => "",
            Section::Down => " (down section)",
        };
        write!(
            f,
            "migration {} statement {}{section} ({}:{}) is destructive: {}",
            self.version,
            self.statement,
            self.file.display(),
            self.line,
            self.rule
        )
    }
}

/// flotilla's own tables: a migration has no business writing them.
const OWN_TABLES: &[&str] = &["_MIGRATION_HISTORY", "_MIGRATION_LOCK", "_MIGRATION_LEASE"];

/// The destructive statements of `migration`'s up section.
///
/// Destructive: any `REMOVE …` (table, field, index, event, function, param, analyzer,
/// access, user, namespace, database, …); `DELETE`; `DEFINE … OVERWRITE` (replaces a
/// definition); `DEFINE TABLE … DROP` (discards writes); `UPDATE`/`UPSERT` with `UNSET`,
/// `CONTENT` or `REPLACE` (removes fields or replaces whole records), `SET f = NONE` or
/// `MERGE { f: NONE }` (removes fields); `ALTER … DROP`; a `DELETE` or `REMOVE` nested in any
/// statement that is not itself a `DEFINE` (whose bodies run later, not now); and anything
/// touching flotilla's own tables. Words inside strings, regex literals and comments do not
/// count, nor do function names (`string::replace`, `array::remove`).
pub fn destructive(migration: &Migration) -> Vec<Finding> {
    findings(migration, Section::Up, &migration.up, |_| false)
}

/// The destructive statements of `migration`'s down section that do not merely undo its up:
/// removing a table, field, index, event, function, param or analyzer the up defined, or
/// deleting records of what the up created or inserted into, is an undo.
pub fn destructive_down(migration: &Migration) -> Vec<Finding> {
    let Some(down) = &migration.down else {
        return Vec::new();
    };
    let created: Vec<Vec<String>> = migration.up.iter().map(|s| words(&s.text)).collect();
    findings(migration, Section::Down, down, |words| {
        undoes(words, &created)
    })
}

fn findings(
    migration: &Migration,
    section: Section,
    statements: &[Statement],
    undo: impl Fn(&[String]) -> bool,
) -> Vec<Finding> {
    let file = match section {
        Section::Up => migration.path.clone(),
        Section::Down => migration.down_file().to_path_buf(),
    };
    statements
        .iter()
        .enumerate()
        .filter_map(|(index, statement)| {
            let lexed = Lexed::of(&statement.text)?;
            let rule = lexed.rule()?;
            (!undo(&lexed.words)).then(|| Finding {
                version: migration.version.clone(),
                file: file.clone(),
                section,
                statement: index + 1,
                line: statement.line,
                rule,
            })
        })
        .collect()
}

/// Whether the down statement `down` (its words) removes what one of the up statements
/// `created` (their words) made.
fn undoes(down: &[String], created: &[Vec<String>]) -> bool {
    let Some(first) = down.first().map(String::as_str) else {
        return false;
    };
    let made = |kind: &str, name: &str| {
        created.iter().any(|up| {
            up.first().is_some_and(|w| w == "DEFINE")
                && up.get(1).is_some_and(|w| w == kind)
                && up[2..]
                    .iter()
                    .filter(|w| !matches!(w.as_str(), "OVERWRITE" | "IF" | "NOT" | "EXISTS"))
                    .take(1)
                    .any(|w| *w == name)
        })
    };
    match (first, down.get(1), down.get(2)) {
        ("REMOVE", Some(kind), Some(name)) => {
            let name = if name == "IF" {
                down.get(4).map(String::as_str).unwrap_or_default()
            } else {
                name.as_str()
            };
            made(kind, name)
        }
        ("DELETE", Some(record), _) => {
            created
                .iter()
                .any(|up| match up.first().map(String::as_str) {
                    Some("CREATE" | "UPSERT") => up.get(1) == Some(record),
                    Some("INSERT") => {
                        up[1..]
                            .iter()
                            .find(|w| !matches!(w.as_str(), "RELATION" | "IGNORE" | "INTO"))
                            == Some(record)
                    }
                    _ => false,
                })
        }
        _ => false,
    }
}

/// A statement's tokens and its words, uppercased (a record id `a:b` is one word here).
struct Lexed {
    tokens: Vec<(Kind, String)>,
    words: Vec<String>,
}

impl Lexed {
    fn of(text: &str) -> Option<Self> {
        let tokens: Vec<(Kind, String)> = tokens(text, 1)
            .ok()?
            .into_iter()
            .map(|t: Token| (t.kind, text[t.start..t.end].to_ascii_uppercase()))
            .collect();
        Some(Self {
            words: words_of(&tokens),
            tokens,
        })
    }

    fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    /// Whether `first` is followed, anywhere later, by `second` right after it.
    fn pair(&self, first: Kind, second: &str) -> bool {
        self.tokens
            .windows(2)
            .any(|w| w[0].0 == first && w[1].0 == Kind::Word && w[1].1 == second)
    }

    fn rule(&self) -> Option<String> {
        let first = self.words.first()?.as_str();
        if let Some(table) = self.words.iter().find(|w| {
            OWN_TABLES
                .iter()
                .any(|own| w.split(':').next() == Some(*own))
        }) {
            let table = table
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            return Some(format!("touches flotilla's own table `{table}`"));
        }
        let updates = matches!(first, "UPDATE" | "UPSERT");
        match first {
            "REMOVE" => Some(
                format!("REMOVE {}", self.words.get(1).map_or("", String::as_str))
                    .trim_end()
                    .to_owned(),
            ),
            "DELETE" => Some("DELETE".to_owned()),
            "DEFINE" if self.has("OVERWRITE") => {
                Some("DEFINE … OVERWRITE replaces an existing definition".to_owned())
            }
            "DEFINE" if self.words.get(1).is_some_and(|w| w == "TABLE") && self.has("DROP") => {
                Some("DEFINE TABLE … DROP discards the table's records".to_owned())
            }
            "DEFINE" => None,
            _ if updates && self.has("UNSET") => Some(format!("{first} … UNSET removes fields")),
            _ if updates && (self.has("CONTENT") || self.has("REPLACE")) => {
                Some(format!("{first} … CONTENT/REPLACE replaces whole records"))
            }
            _ if updates && self.has("SET") && self.pair(Kind::Punct('='), "NONE") => {
                Some(format!("{first} … SET field = NONE removes fields"))
            }
            _ if updates && self.has("MERGE") && self.pair(Kind::Punct(':'), "NONE") => {
                Some(format!("{first} … MERGE {{ field: NONE }} removes fields"))
            }
            "ALTER" if self.has("DROP") => Some("ALTER … DROP".to_owned()),
            _ if self.has("DELETE") => Some("DELETE inside a statement".to_owned()),
            _ if self.has("REMOVE") => Some("REMOVE inside a statement".to_owned()),
            _ => None,
        }
    }
}

/// Words of `text`, uppercased, a record id (`person:ada`) or parameter (`$p`) as one word.
fn words(text: &str) -> Vec<String> {
    Lexed::of(text).map(|l| l.words).unwrap_or_default()
}

fn words_of(tokens: &[(Kind, String)]) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut glue = false;
    for (index, (kind, text)) in tokens.iter().enumerate() {
        match kind {
            Kind::Word if glue => {
                if let Some(last) = words.last_mut() {
                    last.push_str(text);
                }
                glue = false;
            }
            Kind::Word => words.push(text.clone()),
            Kind::Punct(':') => {
                // `table:id` is one record id; `name: value` in an object is not.
                let joined = index > 0
                    && tokens[index - 1].0 == Kind::Word
                    && tokens.get(index + 1).is_some_and(|t| t.0 == Kind::Word);
                if joined && let Some(last) = words.last_mut() {
                    last.push(':');
                    glue = true;
                }
            }
            Kind::Punct('$') => {
                words.push("$".to_owned());
                glue = true;
            }
            _ => glue = false,
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_for(text: &str) -> Option<String> {
        Lexed::of(text)?.rule()
    }

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
            (
                "UPDATE user SET nickname = NONE WHERE true",
                Some("UPDATE … SET field = NONE removes fields"),
            ),
            (
                "UPDATE user MERGE { nickname: NONE }",
                Some("UPDATE … MERGE { field: NONE } removes fields"),
            ),
            ("IF true { DELETE user }", Some("DELETE inside a statement")),
            (
                "CREATE _migration_history:fake SET version = '9999'",
                Some("touches flotilla's own table `_migration_history`"),
            ),
            (
                "UPDATE _migration_lock:lock SET token = 'mine'",
                Some("touches flotilla's own table `_migration_lock`"),
            ),
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
            ("UPDATE user SET name = 'x' // not a DELETE either", None),
            ("UPDATE user SET name = 'x' # nor a REMOVE", None),
            (
                "UPDATE user SET name = string::replace(name, 'a', 'b')",
                None,
            ),
            ("UPDATE user SET tags = array::remove(tags, 0)", None),
            ("UPDATE user SET note = 'NONE'", None),
            ("UPDATE user MERGE { a: 1 }", None),
            (
                "UPDATE user SET ok = string::matches(name, /DELETE|REMOVE/)",
                None,
            ),
            ("CREATE user SET nickname = NONE", None),
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

    #[test]
    fn a_down_that_undoes_its_up_is_not_destructive_and_one_that_destroys_more_is() {
        let undo = Migration::parse(
            "m/0001_a.surql",
            "-- @up\nDEFINE TABLE IF NOT EXISTS account SCHEMAFULL;\nDEFINE FIELD email ON TABLE account TYPE string;\nDEFINE INDEX by_email ON account FIELDS email;\nDEFINE FUNCTION fn::greet() { RETURN 1 };\nCREATE account:founder SET email = 'f';\nINSERT INTO setting { key: 'theme' };\n-- @down\nDELETE setting;\nDELETE account:founder;\nREMOVE FUNCTION fn::greet;\nREMOVE INDEX by_email ON account;\nREMOVE FIELD email ON TABLE account;\nREMOVE TABLE IF EXISTS account;\n",
        )
        .expect("valid");
        assert_eq!(destructive_down(&undo), Vec::new());
        let destroys = Migration::parse(
            "m/0002_b.surql",
            "-- @up\nDEFINE FIELD nickname ON user TYPE option<string>;\n-- @down\nREMOVE FIELD nickname ON user;\nREMOVE FIELD email ON user;\nDELETE user WHERE active = false;\n",
        )
        .expect("valid");
        let findings = destructive_down(&destroys);
        let lines: Vec<usize> = findings.iter().map(|f| f.line).collect();
        assert_eq!(lines, [5, 6], "{findings:?}");
        assert!(findings[0].to_string().contains("(down section)"));
    }
}
