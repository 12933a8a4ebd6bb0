//! The session-state lexer: SET/RESET forms, splitting, pins, set_config calls and rollbacks.

use super::*;

fn set(name: &str, statement: &str) -> SessionOp {
    SessionOp::Set {
        name: name.into(),
        statement: Arc::from(statement),
    }
}

#[test]
fn ordinary_queries_have_no_ops() {
    assert!(session_ops("SELECT 1").is_empty());
    assert!(session_ops("select 'set x = 1; reset all'").is_empty());
    assert!(session_ops("select $$;set x=1;$$, $1 -- ; set y=2\n").is_empty());
    assert!(session_ops("/* set a=1; */ select 1").is_empty());
    assert!(session_ops("insert into settings values ('x')").is_empty());
}

#[test]
fn finds_set_reset_discard() {
    assert_eq!(
        session_ops("SET search_path TO a, b; select 1; RESET statement_timeout"),
        vec![
            set("search_path", "SET search_path TO a, b"),
            SessionOp::Reset {
                name: "statement_timeout".into()
            }
        ]
    );
    assert_eq!(
        session_ops("set SESSION TimeZone='UTC'"),
        vec![set("timezone", "set SESSION TimeZone='UTC'")]
    );
    assert_eq!(
        session_ops("SET TIME ZONE 'Europe/Paris'"),
        vec![set("timezone", "SET TIME ZONE 'Europe/Paris'")]
    );
    assert_eq!(
        session_ops("set application_name = default"),
        vec![SessionOp::Reset {
            name: "application_name".into()
        }]
    );
    assert_eq!(
        session_ops("  -- hello\n reset ALL ;"),
        vec![SessionOp::ResetAll]
    );
    assert_eq!(session_ops("DISCARD ALL"), vec![SessionOp::DiscardAll]);
    assert!(session_ops("DISCARD PLANS").is_empty());
    assert_eq!(
        session_ops("deallocate prepare all"),
        vec![SessionOp::DeallocateAll]
    );
    assert!(session_ops("deallocate foo").is_empty());
}

#[test]
fn transaction_scoped_sets_are_ignored() {
    assert!(session_ops("SET LOCAL search_path = x").is_empty());
    assert!(session_ops("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_empty());
    assert!(session_ops("set constraints all deferred").is_empty());
}

fn reset(name: &str) -> SessionOp {
    SessionOp::Reset { name: name.into() }
}

#[test]
fn sql_standard_spellings_name_the_real_setting() {
    assert_eq!(
        session_ops("SET XML OPTION DOCUMENT"),
        vec![set("xmloption", "SET XML OPTION DOCUMENT")]
    );
    for resets in [
        "RESET TIME ZONE",
        "SET TIME ZONE DEFAULT",
        "set time zone local",
        "SET timezone = default",
        "SET timezone TO DEFAULT",
    ] {
        assert_eq!(session_ops(resets), vec![reset("timezone")], "{resets}");
    }
    for resets in [
        "RESET SESSION AUTHORIZATION",
        "SET SESSION AUTHORIZATION DEFAULT",
    ] {
        assert_eq!(
            session_ops(resets),
            vec![reset("session_authorization")],
            "{resets}"
        );
    }
    assert_eq!(
        session_ops("SET SESSION AUTHORIZATION app"),
        vec![set(
            "session_authorization",
            "SET SESSION AUTHORIZATION app"
        )]
    );
    assert_eq!(session_ops("SET ROLE NONE"), vec![reset("role")]);
    assert_eq!(session_ops("RESET ROLE"), vec![reset("role")]);
    assert_eq!(
        session_ops("SET TIME ZONE 'UTC'"),
        vec![set("timezone", "SET TIME ZONE 'UTC'")]
    );
}

#[test]
fn rollbacks_pins_and_set_config_calls() {
    assert_eq!(
        session_ops("ROLLBACK TO SAVEPOINT s"),
        vec![SessionOp::Rollback]
    );
    assert_eq!(session_ops("abort"), vec![SessionOp::Rollback]);
    assert!(session_ops("ROLLBACK PREPARED 'x'").is_empty());
    assert!(session_ops("PREPARE TRANSACTION 'x'").is_empty());
    assert!(session_ops("select temp into t from x").is_empty());
    assert_eq!(
        session_ops("SET application_name = 'caf\u{FFFD}'"),
        vec![SessionOp::Pin("SET in non-UTF-8 text")]
    );
    assert!(session_ops("create table temp (x int)").is_empty());
    for (sql, what) in [
        ("LISTEN chan", "LISTEN"),
        ("prepare q AS SELECT 1", "PREPARE"),
        (
            "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1",
            "DECLARE … WITH HOLD",
        ),
        ("CREATE TEMP TABLE t (x int)", "CREATE TEMP"),
        ("create global temporary table t (x int)", "CREATE TEMP"),
        (
            "SELECT pg_advisory_lock(1), pg_advisory_lock(2)",
            "advisory lock",
        ),
        ("select PG_TRY_ADVISORY_LOCK_SHARED(1)", "advisory lock"),
        ("LOAD 'auto_explain'", "LOAD"),
        ("DO $$BEGIN SET ROLE other; END$$", "DO"),
        ("select * INTO TEMP t from x", "SELECT INTO TEMP"),
        (
            "with a as (select 1) select * into temporary t from a",
            "SELECT INTO TEMP",
        ),
        ("CREATE TABLE pg_temp.t (x int)", "CREATE TEMP"),
    ] {
        assert_eq!(session_ops(sql), vec![SessionOp::Pin(what)], "{sql}");
    }
    assert!(session_ops("DECLARE c CURSOR FOR SELECT hold FROM t").is_empty());
    assert!(session_ops("CREATE TABLE temp (x int)").is_empty());
    assert!(session_ops("SELECT pg_advisory_xact_lock(1)").is_empty());
    let verify = |custom: Option<&str>| SessionOp::Verify {
        custom: custom.map(str::to_string),
    };
    assert_eq!(
        session_ops("SELECT set_config('search_path', 'x', false)"),
        vec![verify(None)]
    );
    assert_eq!(
        session_ops(
            "select SET_CONFIG ( 'App.User', (select '1'), FALSE ), set_config(n, v, false) from t"
        ),
        vec![verify(Some("app.user")), verify(None)]
    );
    assert!(session_ops("SELECT set_config('app.user', current_setting('x'), true)").is_empty());
    assert!(session_ops("SELECT set_config('a.b', 'it''s, (odd)', TRUE)").is_empty());
    assert_eq!(session_ops("SELECT set_config"), vec![verify(None)]);
    assert!(session_ops("select my_set_configs, a_b_c from t_x").is_empty());
}

#[test]
fn lexer_survives_unterminated_input() {
    for text in [
        "'",
        "\"",
        "/*",
        "$a$",
        "$",
        "e'\\",
        "--",
        "set",
        "reset",
        "SET \"Quoted\" = 1",
        "select set_config('a.b",
        "select set_config(",
        "select pg_try_advisory_lock",
        "_",
        "DECLARE",
    ] {
        let _ = session_ops(text);
    }
    assert_eq!(
        session_ops("SET \"Quoted\" = 1"),
        vec![set("Quoted", "SET \"Quoted\" = 1")]
    );
}
