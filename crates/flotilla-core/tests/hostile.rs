//! Hostile input for everything that reads files: the migration parser, the statement
//! splitter, the destructive lint and both configuration formats. Deep nesting, huge files,
//! NUL bytes, invalid UTF-8, random text: never a panic (or a stack overflow), always either
//! a result or a clear error naming the file. A fixed case budget keeps CI time fixed.

use std::path::Path;

use flotilla_core::config::{Format, ProjectConfig};
use flotilla_core::{Error, Migration, MigrationSet, lint, split_statements};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// SurrealQL-ish text: keywords, quotes, brackets, comments, markers, control characters.
fn surrealql() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("DEFINE TABLE a".to_owned()),
        Just("REMOVE FIELD x ON a".to_owned()),
        Just("DELETE a".to_owned()),
        Just("RETURN 1".to_owned()),
        Just(";".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("`".to_owned()),
        Just("⟨".to_owned()),
        Just("⟩".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just("--".to_owned()),
        Just("#".to_owned()),
        Just("\\".to_owned()),
        Just("\n".to_owned()),
        Just("-- @up\n".to_owned()),
        Just("-- @down\n".to_owned()),
        Just("-- @metadata\n".to_owned()),
        Just("\0".to_owned()),
        "\\PC{0,8}",
    ];
    prop::collection::vec(pieces, 0..64).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_parser_and_the_lint_never_panic(text in surrealql()) {
        if let Ok(migration) = Migration::parse("m/0001_fuzz.surql", &text) {
            let _ = lint::destructive(&migration);
            for statement in &migration.up {
                prop_assert!(!statement.text.trim().is_empty());
            }
        }
    }

    #[test]
    fn the_splitter_keeps_every_statement_inside_its_source(text in surrealql()) {
        if let Ok(statements) = split_statements(&text, 1) {
            for statement in statements {
                prop_assert!(text.contains(&statement.text));
                prop_assert!(statement.line >= 1);
            }
        }
    }

    #[test]
    fn toml_configuration_never_panics(text in "\\PC{0,400}") {
        let _ = ProjectConfig::parse(Path::new("flotilla.toml"), &text, Format::Toml, &|_| None);
    }

    #[test]
    fn json_configuration_never_panics(text in "[\\[\\]{}\",:0-9a-z \\\\]{0,400}") {
        let _ = ProjectConfig::parse(Path::new("environments.json"), &text, Format::Json, &|_| None);
    }
}

#[test]
fn deep_nesting_is_an_error_or_a_result_never_a_stack_overflow() {
    let depth = 100_000;
    let braces = format!(
        "-- @up\nLET $x = {}1{};\n",
        "{".repeat(depth),
        "}".repeat(depth)
    );
    let _ = Migration::parse("m/0001_deep.surql", &braces);
    let unclosed = format!("-- @up\nLET $x = {};\n", "{".repeat(depth));
    assert!(Migration::parse("m/0001_deep.surql", &unclosed).is_err());
    let toml = format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let error = ProjectConfig::parse(Path::new("flotilla.toml"), &toml, Format::Toml, &|_| None)
        .expect_err("too deep");
    assert!(error.to_string().contains("flotilla.toml"), "{error}");
    let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let error = ProjectConfig::parse(Path::new("environments.json"), &json, Format::Json, &|_| {
        None
    })
    .expect_err("too deep");
    assert!(error.to_string().contains("environments.json"), "{error}");
}

#[test]
fn a_huge_file_with_nul_bytes_is_read_or_refused_cleanly() {
    let mut text = String::from("-- @up\n");
    for i in 0..50_000 {
        text.push_str(&format!("CREATE a:{i} SET note = 'x\0y';\n"));
    }
    let migration = Migration::parse("m/0001_huge.surql", &text).expect("a big file is fine");
    assert_eq!(migration.up.len(), 50_000);
    assert_eq!(migration.up[49_999].line, 50_001);
}

#[test]
fn invalid_utf8_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("0001_bad.surql"),
        b"-- @up\nDEFINE TABLE \xff\xfe;\n",
    )
    .expect("write");
    let error = MigrationSet::load(dir.path()).expect_err("not UTF-8");
    assert!(matches!(error, Error::InvalidMigration { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("0001_bad.surql") && message.contains("UTF-8"),
        "{message}"
    );
}
