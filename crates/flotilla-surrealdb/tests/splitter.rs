//! flotilla's statement splitter against SurrealDB's own parser: every statement flotilla
//! splits from a file must parse alone, and there must be as many as SurrealDB's parser
//! finds in the whole file — over a corpus (files written for this test, every lexical form
//! SurrealDB 3 has, and SurrealDB's own parser test file) and over generated input.

use std::path::{Path, PathBuf};

use flotilla_core::split_statements;
use proptest::prelude::*;

/// Splits `source` and checks it against the parser; `what` names it in failures.
fn agrees_with_the_parser(source: &str, what: &str) -> Result<usize, String> {
    let whole = surrealdb_core::syn::parse(source)
        .map_err(|e| format!("{what}: SurrealDB does not parse it as a whole: {e}"))?;
    let split = split_statements(source, 1)
        .map_err(|e| format!("{what}: flotilla cannot split it: {e}"))?;
    for statement in &split {
        let alone = surrealdb_core::syn::parse(&statement.text).map_err(|e| {
            format!(
                "{what}: the statement at line {} does not parse alone: {e}\n{}",
                statement.line, statement.text
            )
        })?;
        if alone.expressions.len() != 1 {
            return Err(format!(
                "{what}: the statement at line {} is {} statements to SurrealDB:\n{}",
                statement.line,
                alone.expressions.len(),
                statement.text
            ));
        }
        let first_line = source.lines().nth(statement.line - 1).unwrap_or_default();
        let opening = statement.text.lines().next().unwrap_or_default();
        if !first_line.contains(opening) {
            return Err(format!(
                "{what}: the statement said to start at line {} does not: {opening:?}",
                statement.line
            ));
        }
    }
    if split.len() != whole.expressions.len() {
        let texts: Vec<&str> = split.iter().map(|s| s.text.as_str()).collect();
        return Err(format!(
            "{what}: flotilla splits {} statements, SurrealDB parses {}: {texts:#?}",
            split.len(),
            whole.expressions.len()
        ));
    }
    Ok(split.len())
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[test]
fn the_corpus_splits_as_surrealdb_parses_it() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let mut statements = 0;
    for file in &files {
        let source = std::fs::read_to_string(file).expect("read");
        statements += agrees_with_the_parser(&source, &file.display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(statements > 60, "{statements}");
}

/// SurrealDB's own parser test file (`test.surql` of the `surrealdb-syn` crate this build
/// uses), read where cargo unpacked it — used, not copied: its licence is SurrealDB's.
#[test]
fn surrealdbs_own_parser_test_file_splits_as_surrealdb_parses_it() {
    let rustc = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This platform's packages only: those of others were never downloaded.
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{output:?}");
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let manifest = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "surrealdb-syn")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("surrealdb-syn is a dependency");
    let file = Path::new(manifest).with_file_name("test.surql");
    let source = std::fs::read_to_string(&file).expect("surrealdb-syn ships test.surql");
    let statements = agrees_with_the_parser(&source, &file.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(statements > 10, "{statements}");
}

/// Text safe inside a `'…'` (`"…"` with `double`) string: the quote and backslash escaped,
/// everything else — `;`, the other quote, comment openers, braces, slashes — as is.
fn quoted(content: &str, double: bool) -> String {
    let quote = if double { '"' } else { '\'' };
    let mut out = String::from(quote);
    for c in content.chars() {
        if c == quote || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(quote);
    out
}

/// Characters that trouble a splitter.
fn tricky() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(";"),
            Just("'"),
            Just("\""),
            Just("`"),
            Just("\\"),
            Just("--"),
            Just("//"),
            Just("#"),
            Just("/*"),
            Just("*/"),
            Just("{"),
            Just("}"),
            Just("⟨"),
            Just("⟩"),
            Just("/"),
            Just("\n"),
            Just("a"),
            Just(" "),
            Just("é"),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// A string literal in one of SurrealDB's forms.
fn string_literal() -> impl Strategy<Value = String> {
    (tricky(), any::<bool>(), 0..3usize).prop_map(|(content, double, prefix)| {
        let body = quoted(&content, double);
        match prefix {
            0 => body,
            1 => format!("s{body}"),
            _ => body,
        }
    })
}

/// A comment in one of SurrealDB's forms, ending the line where it must.
fn comment() -> impl Strategy<Value = String> {
    (tricky(), 0..4usize).prop_map(|(content, form)| {
        let line = content.replace(['\n', '\r'], " ");
        match form {
            0 => format!("-- {line}\n"),
            1 => format!("// {line}\n"),
            2 => format!("# {line}\n"),
            _ => format!("/* {} */", content.replace("*/", "* /")),
        }
    })
}

/// Regex content: anything but an unescaped `/` or a line break.
fn regex_literal() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(";"),
            Just("'"),
            Just("\""),
            Just("a"),
            Just("[;]"),
            Just("\\/"),
            Just("a{1}"),
            Just("#"),
            Just("--")
        ],
        1..6,
    )
    .prop_map(|parts| format!("/{}/", parts.concat()))
}

/// An identifier, plain or quoted with escapes.
fn identifier() -> impl Strategy<Value = String> {
    (tricky(), 0..3usize).prop_map(|(content, form)| match form {
        0 => "plain_name".to_owned(),
        1 => format!("`{}`", content.replace('\\', "\\\\").replace('`', "\\`")),
        // `⟩` has no escape of its own inside `⟨…⟩`: it is written as a Unicode escape.
        _ => format!(
            "⟨{}⟩",
            content.replace('\\', "\\\\").replace('⟩', "\\u{27e9}")
        ),
    })
}

/// One statement that SurrealDB 3 parses, built from the pieces above.
fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        (identifier(), string_literal(), string_literal())
            .prop_map(|(id, a, b)| format!("CREATE t:{id} SET a = {a}, b = {b}")),
        (string_literal(), regex_literal()).prop_map(|(s, r)| format!(
            "DEFINE FUNCTION fn::f($s: string) {{ LET $x = {s}; RETURN string::replace($s, {r}, ''); }}"
        )),
        (regex_literal(), string_literal())
            .prop_map(|(r, s)| format!("SELECT * FROM t WHERE a = {r} OR b = {s}")),
        (identifier(), comment())
            .prop_map(|(id, c)| format!("DEFINE FIELD {id} ON t {c} TYPE option<string>")),
        (1..9u32, 1..9u32).prop_map(|(a, b)| format!("RETURN {a} / {b} / 1")),
        (string_literal(), regex_literal()).prop_map(|(s, r)| format!(
            "IF true {{ CREATE t SET v = {s}; }} ELSE {{ RETURN {r}; }}"
        )),
        string_literal().prop_map(|s| format!(
            "DEFINE EVENT e ON TABLE t WHEN $event = 'CREATE' THEN {{ CREATE log SET m = {s}; }}"
        )),
        Just("DEFINE FIELD half ON t VALUE $value / 2".to_owned()),
    ]
}

/// A file: statements separated by `;`, with comments and white space between them.
fn file() -> impl Strategy<Value = (String, usize)> {
    proptest::collection::vec(
        (
            statement(),
            proptest::option::of(comment()),
            prop_oneof![Just(";\n"), Just(";"), Just(" ;\n\n"), Just(";;\n")],
        ),
        1..8,
    )
    .prop_map(|parts| {
        let count = parts.len();
        let text = parts
            .into_iter()
            .map(|(statement, comment, end)| {
                format!("{}{statement}{end}", comment.unwrap_or_default())
            })
            .collect();
        (text, count)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_files_split_as_surrealdb_parses_them((source, count) in file()) {
        let split = agrees_with_the_parser(&source, "generated")
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(split, count);
    }
}
