//! Migrations and reading them from a directory.
//!
//! Two layouts are accepted, and may be mixed in one directory:
//! - `<version>_<name>.surql` with `-- @metadata`, `-- @up` and `-- @down` sections
//!   (a file without markers is up-only). This is also the surql toolkit's format.
//! - `<version>_<name>.up.surql` with an optional `<version>_<name>.down.surql`.
//!
//! The checksum is the SHA-256 of the file's exact bytes (for a pair: the up file's bytes
//! followed by the down file's bytes). Any edit of an applied migration, even to a comment
//! or whitespace, is drift; this matches the surql toolkit, whose history rows flotilla adopts.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Problem, Result};
use crate::split::{Statement, split_statements};
use crate::version::Version;

/// One migration: its version, statements in both directions and checksum.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Migration {
    /// The version from the file name.
    pub version: Version,
    /// A human description: metadata `description`, else the name part of the file name.
    pub description: String,
    /// The file (the `.up.surql` file of a pair).
    pub path: PathBuf,
    /// Hex SHA-256, see the module documentation for what is hashed.
    pub checksum: String,
    /// Statements applied going up.
    pub up: Vec<Statement>,
    /// Statements reverting the migration; `None` when the migration has no down section.
    pub down: Option<Vec<Statement>>,
    /// Where the down statements live, when not in `path`.
    pub down_path: Option<PathBuf>,
    /// Versions this migration declares it depends on (`-- depends_on: [..]`).
    pub depends_on: Vec<String>,
    /// Every `-- key: value` line of the metadata section.
    pub metadata: BTreeMap<String, String>,
}

impl Migration {
    /// Parses one single-file migration (`<version>_<name>.surql`) from its contents.
    pub fn parse(path: impl Into<PathBuf>, contents: &str) -> Result<Self> {
        let path = path.into();
        let (version, name) = match parse_file_name(&path) {
            Some((version, name, FileKind::Single)) => (version, name),
            _ => return Err(invalid(&path, None, Problem::FileName)),
        };
        let sections = Sections::parse(&path, contents)?;
        Self::assemble(
            path,
            version,
            name,
            sha256_hex(&[contents.as_bytes()]),
            sections,
        )
    }

    /// Parses an `.up.surql` file and its optional `.down.surql` partner.
    pub fn parse_pair(
        up_path: impl Into<PathBuf>,
        up: &str,
        down: Option<(PathBuf, &str)>,
    ) -> Result<Self> {
        let up_path = up_path.into();
        let (version, name) = match parse_file_name(&up_path) {
            Some((version, name, FileKind::Up)) => (version, name),
            _ => return Err(invalid(&up_path, None, Problem::FileName)),
        };
        let mut sections = Sections::parse(&up_path, up)?;
        if down.is_some() && sections.down.is_some() {
            return Err(invalid(
                &up_path,
                sections.down_line,
                Problem::DuplicateSection("down"),
            ));
        }
        let mut bytes: Vec<&[u8]> = vec![up.as_bytes()];
        let mut down_path = None;
        if let Some((path, text)) = down {
            sections.down = Some(split(&path, text, 1)?);
            bytes.push(text.as_bytes());
            down_path = Some(path);
        }
        let mut migration = Self::assemble(up_path, version, name, sha256_hex(&bytes), sections)?;
        migration.down_path = down_path;
        Ok(migration)
    }

    fn assemble(
        path: PathBuf,
        version: Version,
        name: String,
        checksum: String,
        sections: Sections,
    ) -> Result<Self> {
        if sections.up.is_empty() {
            return Err(invalid(&path, sections.up_line, Problem::EmptyUp));
        }
        let all = sections.up.iter().chain(sections.down.iter().flatten());
        for statement in all {
            if let Some(problem) = breaks_the_transaction(&statement.text) {
                return Err(invalid(&path, Some(statement.line), problem));
            }
        }
        if let Some(declared) = sections.metadata.get("version")
            && Version::parse(declared).as_ref() != Some(&version)
        {
            return Err(invalid(
                &path,
                None,
                Problem::VersionMismatch {
                    file_name: version,
                    metadata: declared.clone(),
                },
            ));
        }
        let description = sections
            .metadata
            .get("description")
            .cloned()
            .unwrap_or(name);
        let depends_on = sections
            .metadata
            .get("depends_on")
            .map(|list| {
                list.trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .map(|d| d.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
                    .filter(|d| !d.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            version,
            description,
            path,
            checksum,
            up: sections.up,
            down: sections.down,
            down_path: None,
            depends_on,
            metadata: sections.metadata,
        })
    }

    /// The file holding the down statements.
    pub fn down_file(&self) -> &Path {
        self.down_path.as_deref().unwrap_or(&self.path)
    }
}

/// The validated contents of a migrations directory, ordered by version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationSet {
    migrations: Vec<Migration>,
}

impl MigrationSet {
    /// Reads every migration in `dir`. Files not ending in `.surql` and files starting with
    /// `_` or `.` are ignored; a `.surql` file with an invalid name is an error.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.is_dir() {
            return Err(match fs::metadata(dir) {
                Ok(_) => Error::NotADirectory {
                    path: dir.to_path_buf(),
                },
                Err(source) => io(source),
            });
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if file_name.starts_with(['_', '.']) || !file_name.ends_with(".surql") {
                continue;
            }
            if !path.is_file() {
                continue;
            }
            let bytes = fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let text =
                String::from_utf8(bytes).map_err(|_| invalid(&path, None, Problem::NotUtf8))?;
            files.push((path, text));
        }
        Self::from_files(files)
    }

    /// Builds a set from `(path, contents)` pairs, as if they were a directory's files.
    pub fn from_files(files: impl IntoIterator<Item = (PathBuf, String)>) -> Result<Self> {
        let mut singles = Vec::new();
        let mut ups = Vec::new();
        let mut downs: HashMap<(Version, String), (PathBuf, String)> = HashMap::new();
        for (path, text) in files {
            match parse_file_name(&path) {
                Some((_, _, FileKind::Single)) => singles.push((path, text)),
                Some((_, _, FileKind::Up)) => ups.push((path, text)),
                Some((version, name, FileKind::Down)) => {
                    downs.insert((version, name), (path, text));
                }
                None => return Err(invalid(&path, None, Problem::FileName)),
            }
        }
        let mut migrations = Vec::with_capacity(singles.len() + ups.len());
        for (path, text) in singles {
            migrations.push(Migration::parse(path, &text)?);
        }
        for (path, text) in ups {
            let Some((version, name, _)) = parse_file_name(&path) else {
                continue;
            };
            let down = downs.remove(&(version, name));
            let down = down.as_ref().map(|(p, t)| (p.clone(), t.as_str()));
            migrations.push(Migration::parse_pair(path, &text, down)?);
        }
        if let Some((path, _)) = downs.into_values().min_by(|a, b| a.0.cmp(&b.0)) {
            return Err(invalid(&path, None, Problem::DownWithoutUp));
        }
        Self::new(migrations)
    }

    /// Orders and validates already-parsed migrations: unique versions, known dependencies.
    pub fn new(mut migrations: Vec<Migration>) -> Result<Self> {
        migrations.sort_by(|a, b| a.version.cmp(&b.version).then_with(|| a.path.cmp(&b.path)));
        for pair in migrations.windows(2) {
            if pair[0].version == pair[1].version {
                return Err(Error::DuplicateVersion {
                    version: pair[1].version.clone(),
                    first: pair[0].path.clone(),
                    second: pair[1].path.clone(),
                });
            }
        }
        let set = Self { migrations };
        for migration in &set.migrations {
            for dependency in &migration.depends_on {
                let known = Version::parse(dependency).is_some_and(|v| set.get(&v).is_some());
                if !known {
                    return Err(invalid(
                        &migration.path,
                        None,
                        Problem::UnknownDependency(dependency.clone()),
                    ));
                }
            }
        }
        Ok(set)
    }

    /// The migrations, oldest first.
    pub fn as_slice(&self) -> &[Migration] {
        &self.migrations
    }

    /// The migration with `version`, if any.
    pub fn get(&self, version: &Version) -> Option<&Migration> {
        self.migrations
            .binary_search_by(|m| m.version.cmp(version))
            .ok()
            .map(|i| &self.migrations[i])
    }

    /// Number of migrations.
    pub fn len(&self) -> usize {
        self.migrations.len()
    }

    /// Whether the set has no migration.
    pub fn is_empty(&self) -> bool {
        self.migrations.is_empty()
    }

    /// The newest version, if any.
    pub fn latest(&self) -> Option<&Version> {
        self.migrations.last().map(|m| &m.version)
    }
}

impl<'a> IntoIterator for &'a MigrationSet {
    type Item = &'a Migration;
    type IntoIter = std::slice::Iter<'a, Migration>;

    fn into_iter(self) -> Self::IntoIter {
        self.migrations.iter()
    }
}

/// Hex SHA-256 of the concatenation of `parts`.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    Single,
    Up,
    Down,
}

/// Splits `0001_create_users.surql` into its version, name and kind.
fn parse_file_name(path: &Path) -> Option<(Version, String, FileKind)> {
    let file_name = path.file_name()?.to_str()?;
    let stem = file_name.strip_suffix(".surql")?;
    let (stem, kind) = if let Some(s) = stem.strip_suffix(".up") {
        (s, FileKind::Up)
    } else if let Some(s) = stem.strip_suffix(".down") {
        (s, FileKind::Down)
    } else {
        (stem, FileKind::Single)
    };
    // The version is the longest prefix of all-digit groups; the rest is the name.
    let mut version_end = 0;
    for (index, group) in stem.split('_').enumerate() {
        if group.is_empty() || !group.bytes().all(|b| b.is_ascii_digit()) {
            break;
        }
        version_end += group.len() + usize::from(index > 0);
    }
    let version = Version::parse(&stem[..version_end])?;
    let name = stem[version_end..].strip_prefix('_')?;
    if name.is_empty() || name.contains('.') {
        return None;
    }
    Some((version, name.to_owned(), kind))
}

/// The sections of a single-file migration.
struct Sections {
    metadata: BTreeMap<String, String>,
    up: Vec<Statement>,
    up_line: Option<usize>,
    down: Option<Vec<Statement>>,
    down_line: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Preamble,
    Metadata,
    Up,
    Down,
}

/// One section's lines: which section, the file line it starts on, its text.
type Run = (Section, usize, String);

impl Sections {
    fn parse(path: &Path, contents: &str) -> Result<Self> {
        let (runs, marked) = runs(path, contents)?;
        let mut sections = Sections {
            metadata: BTreeMap::new(),
            up: Vec::new(),
            up_line: None,
            down: None,
            down_line: None,
        };
        for (section, first_line, text) in runs {
            let statements = split(path, &text, first_line)?;
            let stray = |problem| match statements.first() {
                Some(statement) => Err(invalid(path, Some(statement.line), problem)),
                None => Ok(()),
            };
            match section {
                Section::Preamble if !marked => {
                    sections.up = statements;
                    sections.up_line = Some(first_line);
                }
                Section::Preamble => stray(Problem::StatementOutsideSection)?,
                Section::Metadata => {
                    stray(Problem::StatementInMetadata)?;
                    sections.metadata = parse_metadata(&text);
                }
                Section::Up => {
                    sections.up = statements;
                    sections.up_line = Some(first_line - 1);
                }
                Section::Down => {
                    sections.down = Some(statements);
                    sections.down_line = Some(first_line - 1);
                }
            }
        }
        if marked && sections.up_line.is_none() {
            return Err(invalid(path, None, Problem::EmptyUp));
        }
        Ok(sections)
    }
}

/// The file cut at its section markers: each section a contiguous run of lines, the text
/// before the first marker the preamble; and whether there was any marker.
fn runs(path: &Path, contents: &str) -> Result<(Vec<Run>, bool)> {
    let mut runs: Vec<Run> = vec![(Section::Preamble, 1, String::new())];
    let mut seen: Vec<Section> = Vec::new();
    for (index, line) in contents.lines().enumerate() {
        let number = index + 1;
        let Some(marker) = section_marker(line) else {
            if let Some((_, _, text)) = runs.last_mut() {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        };
        let section = match marker {
            "up" => Section::Up,
            "down" => Section::Down,
            "metadata" => Section::Metadata,
            other => {
                return Err(invalid(
                    path,
                    Some(number),
                    Problem::UnknownMarker(other.into()),
                ));
            }
        };
        if seen.contains(&section) {
            return Err(invalid(
                path,
                Some(number),
                Problem::DuplicateSection(marker_name(section)),
            ));
        }
        seen.push(section);
        runs.push((section, number + 1, String::new()));
    }
    Ok((runs, !seen.is_empty()))
}

/// Why a top-level statement cannot run inside the transaction flotilla wraps a migration in,
/// if it cannot: its own transaction markers, and statements that end the transaction early
/// (`RETURN`: the history row would not be written, so the migration would run again) or move
/// what follows elsewhere (`USE`: the rest of the migration and its history row would land in
/// another namespace or database; `OPTION`: changes the session every later request shares).
fn breaks_the_transaction(text: &str) -> Option<Problem> {
    let keyword: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<String>()
        .to_ascii_uppercase();
    match keyword.as_str() {
        "BEGIN" | "COMMIT" | "CANCEL" => Some(Problem::TransactionStatement(keyword)),
        "RETURN" | "USE" | "OPTION" => Some(Problem::BreaksTransaction(keyword)),
        _ => None,
    }
}

fn marker_name(section: Section) -> &'static str {
    match section {
        Section::Up => "up",
        Section::Down => "down",
        Section::Metadata => "metadata",
        Section::Preamble => "preamble",
    }
}

/// `-- @word` alone on a line (a comment like `-- @todo fix this` is not a marker).
fn section_marker(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("--")?.trim_start();
    let word = rest.strip_prefix('@')?;
    let valid = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(word)
}

fn parse_metadata(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("--")?;
            let (key, value) = rest.split_once(':')?;
            let key = key.trim();
            (!key.is_empty() && !key.contains(' '))
                .then(|| (key.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn split(path: &Path, text: &str, first_line: usize) -> Result<Vec<Statement>> {
    split_statements(text, first_line).map_err(|e| {
        let line = match &e {
            crate::split::SplitError::UnterminatedString { line, .. }
            | crate::split::SplitError::UnterminatedComment { line }
            | crate::split::SplitError::UnclosedBlock { line }
            | crate::split::SplitError::UnexpectedClose { line } => *line,
        };
        invalid(path, Some(line), Problem::Split(e))
    })
}

fn invalid(path: &Path, line: Option<usize>, problem: Problem) -> Error {
    Error::InvalidMigration {
        path: path.to_path_buf(),
        line,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<Migration> {
        Migration::parse(PathBuf::from(format!("migrations/{name}")), text)
    }

    fn problem_of(result: Result<Migration>) -> (Option<usize>, Problem) {
        match result {
            Err(Error::InvalidMigration { line, problem, .. }) => (line, problem),
            other => panic!("expected an invalid migration, got {other:?}"),
        }
    }

    #[test]
    fn surql_toolkit_file_loads_unchanged() {
        let text = "-- @metadata\n-- version: 20260102_120000\n-- description: Create user table\n-- author: surql\n-- depends_on: []\n-- @up\nDEFINE TABLE user SCHEMAFULL;\nDEFINE FIELD email ON TABLE user TYPE string;\n-- @down\nREMOVE TABLE user;\n";
        let m = parse("20260102_120000_create_user.surql", text).expect("parses");
        assert_eq!(m.version.as_str(), "20260102_120000");
        assert_eq!(m.description, "Create user table");
        assert_eq!(m.up.len(), 2);
        assert_eq!(m.up[0].line, 7);
        assert_eq!(m.up[1].line, 8);
        assert_eq!(m.down.as_ref().map(Vec::len), Some(1));
        assert_eq!(m.down.as_ref().map(|d| d[0].line), Some(10));
        assert_eq!(m.metadata.get("author").map(String::as_str), Some("surql"));
        assert!(m.depends_on.is_empty());
        // surql's checksum: SHA-256 of the whole file.
        assert_eq!(m.checksum, sha256_hex(&[text.as_bytes()]));
    }

    #[test]
    fn file_without_markers_is_up_only() {
        let m = parse("0001_init.surql", "-- a comment\nDEFINE TABLE a;\n").expect("parses");
        assert_eq!(m.description, "init");
        assert_eq!(m.up[0].line, 2);
        assert!(m.down.is_none());
    }

    #[test]
    fn file_name_rules() {
        let ok = [
            ("0001_create_users.surql", "0001", "create_users"),
            (
                "20260101_120000_create_users.surql",
                "20260101_120000",
                "create_users",
            ),
            ("7_x.up.surql", "7", "x"),
            ("0002_2fa.surql", "0002", "2fa"),
        ];
        for (name, version, desc) in ok {
            let (v, n, _) = parse_file_name(Path::new(name)).expect(name);
            assert_eq!((v.as_str(), n.as_str()), (version, desc), "{name}");
        }
        for bad in [
            "create.surql",
            "0001.surql",
            "0001_.surql",
            "v1_x.surql",
            "0001_a.b.surql",
            "0001_x.sql",
        ] {
            assert!(
                parse_file_name(Path::new(bad)).is_none(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn validation_errors_name_the_line() {
        assert_eq!(
            problem_of(parse(
                "0001_a.surql",
                "-- @up\nDEFINE TABLE a;\n-- @sideways\n"
            )),
            (Some(3), Problem::UnknownMarker("sideways".into()))
        );
        assert_eq!(
            problem_of(parse("0001_a.surql", "-- @up\nDEFINE TABLE a;\n-- @up\n")),
            (Some(3), Problem::DuplicateSection("up"))
        );
        assert_eq!(
            problem_of(parse(
                "0001_a.surql",
                "-- @up\n-- nothing\n-- @down\nREMOVE TABLE a;"
            )),
            (Some(1), Problem::EmptyUp)
        );
        assert_eq!(
            problem_of(parse(
                "0001_a.surql",
                "DEFINE TABLE a;\n-- @up\nDEFINE TABLE b;"
            )),
            (Some(1), Problem::StatementOutsideSection)
        );
        assert!(matches!(
            problem_of(parse(
                "0001_a.surql",
                "-- @up\nDEFINE TABLE a;\nCREATE a SET s = 'oops;\n"
            )),
            (Some(3), Problem::Split(_))
        ));
        assert!(matches!(
            problem_of(parse(
                "0001_a.surql",
                "-- @metadata\n-- version: 0002\n-- @up\nDEFINE TABLE a;"
            )),
            (None, Problem::VersionMismatch { .. })
        ));
        assert_eq!(
            problem_of(parse("first.surql", "DEFINE TABLE a;")),
            (None, Problem::FileName)
        );
    }

    #[test]
    fn transaction_control_is_rejected() {
        assert_eq!(
            problem_of(parse(
                "0001_a.surql",
                "-- @up\nBEGIN TRANSACTION;\nDEFINE TABLE a;\nCOMMIT;"
            )),
            (Some(2), Problem::TransactionStatement("BEGIN".into()))
        );
    }

    #[test]
    fn statements_that_break_the_transaction_are_rejected_naming_the_line() {
        for (text, line, keyword) in [
            ("-- @up\nCREATE a:1;\nRETURN 'done';\n", 3, "RETURN"),
            ("-- @up\nDEFINE TABLE a;\n\nuse NS other DB x;\n", 4, "USE"),
            ("-- @up\nOPTION IMPORT;\nDEFINE TABLE a;\n", 2, "OPTION"),
            (
                "-- @up\nDEFINE TABLE a;\n-- @down\nREMOVE TABLE a;\nRETURN(1);\n",
                5,
                "RETURN",
            ),
        ] {
            let (got_line, problem) = problem_of(parse("0001_a.surql", text));
            assert_eq!(
                (got_line, problem.clone()),
                (Some(line), Problem::BreaksTransaction(keyword.into())),
                "{text}"
            );
            assert!(problem.to_string().contains(keyword), "{problem}");
        }
        // Inside a function or a block they are ordinary, and words that only start alike
        // are not the keyword.
        let fine = "-- @up\nDEFINE FUNCTION fn::f() { RETURN 1; };\nIF true { RETURN 2 };\nDEFINE TABLE user_returns;\nCREATE user SET used = true;\n";
        parse("0001_a.surql", fine).expect("parses");
    }

    #[test]
    fn todo_comments_are_not_markers() {
        let m = parse(
            "0001_a.surql",
            "-- @up\n-- @todo tidy this\nDEFINE TABLE a;",
        )
        .expect("parses");
        assert_eq!(m.up.len(), 1);
    }

    #[test]
    fn pairs_and_singles_mix_and_order_numerically() {
        let set = MigrationSet::from_files([
            (
                PathBuf::from("m/0010_c.surql"),
                "DEFINE TABLE c;".to_owned(),
            ),
            (
                PathBuf::from("m/0002_b.up.surql"),
                "DEFINE TABLE b;".to_owned(),
            ),
            (
                PathBuf::from("m/0002_b.down.surql"),
                "REMOVE TABLE b;".to_owned(),
            ),
            (
                PathBuf::from("m/0001_a.surql"),
                "-- @up\nDEFINE TABLE a;\n-- @down\nREMOVE TABLE a;".to_owned(),
            ),
        ])
        .expect("valid set");
        let versions: Vec<_> = set.as_slice().iter().map(|m| m.version.as_str()).collect();
        assert_eq!(versions, ["0001", "0002", "0010"]);
        let pair = &set.as_slice()[1];
        assert_eq!(pair.down_file(), Path::new("m/0002_b.down.surql"));
        assert_eq!(
            pair.checksum,
            sha256_hex(&[b"DEFINE TABLE b;", b"REMOVE TABLE b;"])
        );
    }

    #[test]
    fn duplicate_versions_and_orphans_are_errors() {
        let dup = MigrationSet::from_files([
            (
                PathBuf::from("m/0001_a.surql"),
                "DEFINE TABLE a;".to_owned(),
            ),
            (PathBuf::from("m/1_b.surql"), "DEFINE TABLE b;".to_owned()),
        ]);
        assert!(
            matches!(dup, Err(Error::DuplicateVersion { .. })),
            "{dup:?}"
        );
        let orphan = MigrationSet::from_files([(
            PathBuf::from("m/0001_a.down.surql"),
            "REMOVE TABLE a;".to_owned(),
        )]);
        assert!(matches!(
            orphan,
            Err(Error::InvalidMigration {
                problem: Problem::DownWithoutUp,
                ..
            })
        ));
        let unknown_dep = MigrationSet::from_files([(
            PathBuf::from("m/0001_a.surql"),
            "-- @metadata\n-- depends_on: [0000]\n-- @up\nDEFINE TABLE a;".to_owned(),
        )]);
        assert!(matches!(
            unknown_dep,
            Err(Error::InvalidMigration {
                problem: Problem::UnknownDependency(_),
                ..
            })
        ));
    }

    #[test]
    fn loads_a_directory_and_reports_the_bad_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("0001_a.surql"), "DEFINE TABLE a;").expect("write");
        fs::write(dir.path().join("README.md"), "not a migration").expect("write");
        fs::write(dir.path().join("_draft.surql"), "ignored").expect("write");
        let set = MigrationSet::load(dir.path()).expect("loads");
        assert_eq!(set.len(), 1);
        fs::write(
            dir.path().join("0002_b.surql"),
            "-- @up\n\nDEFINE TABLE b {",
        )
        .expect("write");
        let err = MigrationSet::load(dir.path()).expect_err("invalid file");
        let message = err.to_string();
        assert!(message.contains("0002_b.surql:3"), "{message}");
        let missing = MigrationSet::load(dir.path().join("nope")).expect_err("missing dir");
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
