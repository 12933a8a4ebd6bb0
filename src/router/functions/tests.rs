//! The function catalog: built-ins against the installed Postgres catalog, configured and learnt
//! names.

use super::*;
use crate::router::plan::Kind;

/// Classification with no sharded table.
fn classify(sql: &str) -> crate::router::plan::Plan {
    crate::router::classify::classify(sql, &crate::sharding::Rules::default())
}

#[test]
fn builtins_configured_and_learned() {
    let catalog = FunctionCatalog::new(&[
        "Audit".to_string(),
        "app.touch".to_string(),
        "\"CamelCase\"".to_string(),
        "s.\"With.Dot\"".to_string(),
        " ".to_string(),
        "\"".to_string(),
    ]);
    for name in [
        "nextval",
        "pg_advisory_lock",
        "set_config",
        "audit",
        "touch",
    ] {
        assert!(catalog.is_write(name), "{name}");
    }
    assert!(catalog.is_write("CamelCase"));
    assert!(catalog.is_write("With.Dot"));
    assert!(!catalog.is_write("camelcase"));
    assert!(!catalog.is_write("Audit"), "unquoted names are folded");
    assert!(!catalog.is_write("lower"));
    assert!(!catalog.is_write(""));
    assert_eq!(catalog.learned_len(), 0);

    let learned = catalog.with_learned(["bump".to_string(), "MixedCase".to_string()]);
    assert_eq!(learned.learned_len(), 2);
    assert!(learned.is_write("bump") && learned.is_write("MixedCase") && learned.is_write("audit"));
    assert!(!catalog.is_write("bump"), "the original is untouched");
    // Learning again replaces, not adds.
    let relearned = learned.with_learned(["other".to_string()]);
    assert!(!relearned.is_write("bump") && relearned.is_write("other"));
}

#[test]
fn default_is_the_builtin_list() {
    let catalog = FunctionCatalog::default();
    assert!(BUILTIN_WRITERS.iter().all(|name| catalog.is_write(name)));
    assert!(!catalog.is_write("now"));
}

#[test]
fn builtin_names_are_plain_lowercase_and_unique() {
    let mut seen = HashSet::new();
    for name in BUILTIN_WRITERS {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
        assert!(seen.insert(name), "duplicate {name}");
    }
}

/// Every built-in writer is a real function: in the installed server's `postgres.bki` (the bootstrap
/// catalog, so no server is needed) or in a contrib extension script. Skipped when no Postgres is
/// installed.
#[test]
fn builtin_names_exist_in_postgres() {
    let Some(share) = postgres_share_dir() else {
        eprintln!("no postgres.bki found: skipping");
        return;
    };
    let bki = std::fs::read_to_string(share.join("postgres.bki")).expect("read postgres.bki");
    let mut known: HashSet<String> = bki_proc_names(&bki);
    if let Ok(entries) = std::fs::read_dir(share.join("extension")) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "sql") {
                let script = std::fs::read_to_string(entry.path()).unwrap_or_default();
                known.extend(created_functions(&script));
            }
        }
    }
    // Renamed in Postgres 15 (to pg_backup_start/stop); kept for older servers.
    let older = ["pg_start_backup", "pg_stop_backup"];
    let missing: Vec<_> = BUILTIN_WRITERS
        .iter()
        .filter(|n| !known.contains(**n) && !older.contains(n))
        .collect();
    assert!(missing.is_empty(), "not Postgres functions: {missing:?}");
}

fn postgres_share_dir() -> Option<std::path::PathBuf> {
    let mut candidates = vec![
        std::path::PathBuf::from("/usr/local/share/postgresql"),
        std::path::PathBuf::from("/usr/local/pgsql/share"),
    ];
    if let Ok(versions) = std::fs::read_dir("/usr/share/postgresql") {
        candidates.extend(versions.flatten().map(|v| v.path()));
    }
    candidates
        .into_iter()
        .find(|d| d.join("postgres.bki").is_file())
}

/// `proname` of every `insert` between `create pg_proc` and `close pg_proc` (the second field after
/// the oid).
fn bki_proc_names(bki: &str) -> HashSet<String> {
    bki.lines()
        .skip_while(|l| !l.starts_with("create pg_proc"))
        .take_while(|l| !l.starts_with("close pg_proc"))
        .filter_map(|l| l.strip_prefix("insert ( "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .collect()
}

/// Names after `CREATE [OR REPLACE] FUNCTION` in an extension script.
fn created_functions(script: &str) -> Vec<String> {
    let lower = script.to_ascii_lowercase();
    lower
        .split("function ")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            name.rsplit('.').next().map(str::to_string)
        })
        .collect()
}

#[test]
fn learn_query_is_a_read() {
    let plan = classify(LEARN_VOLATILE_SQL);
    assert_eq!(plan.statements.len(), 1);
    assert_eq!(plan.statements[0].kind, Kind::Read);
}
