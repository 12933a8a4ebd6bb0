//! Unit tests of the config checks and the routing of rows between the two rings.

use super::*;
use crate::sharding::{hash_key, ShardKey};

fn config(shards: &[(&str, u16)], vnodes: u32) -> Config {
    let mut text = format!(
        "[sharding]\nvnodes_per_shard = {vnodes}\nreference_tables = [\"countries\"]\n\
         [[sharding.tables]]\nname = \"users\"\ncolumn = \"id\"\n\
         [[users]]\nname = \"app\"\npassword = \"secret\"\n"
    );
    for (name, port) in shards {
        text.push_str(&format!(
            "[[shards]]\nname = \"{name}\"\nprimary = \"postgres://127.0.0.1:{port}\"\n"
        ));
    }
    Config::from_toml(&text).expect("parses")
}

fn reshard(old: Config, new: Config) -> Reshard {
    check_only_shards_added(&old, &new).expect("only shards added");
    let old_ring = old.ring().expect("ring");
    let new_ring = new.ring().expect("ring");
    Reshard {
        run_id: run_id(&old.shard_names(), &new.shard_names()),
        moves: Ring::moved_ranges(&old_ring, &new_ring),
        old_path: "old.toml".into(),
        new_path: "new.toml".into(),
        login: Login {
            user: "app".into(),
            password: None,
            database: "postgres".into(),
        },
        old,
        new,
        old_ring,
        new_ring,
    }
}

#[test]
fn only_added_shards_pass_the_config_check() {
    let old = config(&[("a", 1), ("b", 2)], 64);
    assert!(check_only_shards_added(&old, &config(&[("a", 1), ("b", 2), ("c", 3)], 64)).is_ok());
    // Vnodes are [sharding]: a different ring shape is not "a shard added".
    let err = check_only_shards_added(&old, &config(&[("a", 1), ("b", 2), ("c", 3)], 32))
        .expect_err("differs");
    assert!(err.to_string().contains("sharding"), "{err}");
    assert!(matches!(
        check_only_shards_added(&old, &config(&[("a", 1), ("c", 3)], 64)),
        Err(ReshardError::ShardRemoved(name)) if name == "b"
    ));
    assert!(matches!(
        check_only_shards_added(&old, &config(&[("a", 1), ("b", 9), ("c", 3)], 64)),
        Err(ReshardError::ShardUrlChanged { name, .. }) if name == "b"
    ));
}

#[test]
fn rows_move_only_from_their_old_owner_to_the_added_shard() {
    let r = reshard(
        config(&[("a", 1), ("b", 2)], 64),
        config(&[("a", 1), ("b", 2), ("c", 3)], 64),
    );
    assert_eq!(r.added_shards(), vec![2]);
    assert_eq!(r.sources(), vec![0, 1]);
    assert_eq!(r.pairs().len(), 2);
    let mut moved = 0;
    for id in 0..10_000i64 {
        let hash = hash_key(&ShardKey::Int(id));
        let old_owner = r.old_ring.owner(hash);
        let new_owner = r.new_ring.owner(hash);
        for source in 0..2 {
            let want = (source == old_owner && new_owner == 2).then_some(2);
            assert_eq!(
                r.moving_target(source, hash),
                want,
                "key {id} source {source}"
            );
        }
        assert_eq!(
            (r.route(old_owner))("users", hash),
            r.moving_target(old_owner, hash)
        );
        moved += usize::from(new_owner == 2);
    }
    // About a third moves (64 vnodes: a loose bound).
    assert!((2_000..4_700).contains(&moved), "{moved}");
    let share: f64 = plan::move_groups(&r).iter().map(|g| g.share).sum();
    assert!((0.2..0.47).contains(&share), "{share}");
}

#[test]
fn run_ids_are_stable_and_identifier_safe() {
    let a = run_id(
        &["a".into(), "b".into()],
        &["a".into(), "b".into(), "c".into()],
    );
    assert_eq!(
        a,
        run_id(
            &["a".into(), "b".into()],
            &["a".into(), "b".into(), "c".into()]
        )
    );
    assert_ne!(
        a,
        run_id(
            &["a".into(), "b".into()],
            &["a".into(), "b".into(), "d".into()]
        )
    );
    assert_eq!(a.len(), 16);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn sql_quotes_names_and_pages_by_the_whole_primary_key() {
    let info = tables::TableInfo {
        config_name: "pitches".into(),
        schema: "public".into(),
        name: "pitches".into(),
        columns: vec!["id".into(), "user_id".into(), "title".into()],
        pk: vec![
            ("user_id".into(), "bigint".into()),
            ("id".into(), "bigint".into()),
        ],
        key: Some(("user_id".into(), crate::sharding::KeyType::BigInt)),
    };
    let select = info.select_batch_sql(true, 10);
    assert!(
        select.contains(
            r#"WHERE (t."user_id", t."id") > (($1::text[])[1]::bigint, ($1::text[])[2]::bigint)"#
        ),
        "{select}"
    );
    assert!(
        select.ends_with(r#"ORDER BY t."user_id", t."id" LIMIT 10"#),
        "{select}"
    );
    let upsert = info.upsert_sql();
    assert!(
        upsert
            .contains(r#"ON CONFLICT ("user_id", "id") DO UPDATE SET "title" = EXCLUDED."title""#),
        "{upsert}"
    );
    assert_eq!(tables::quote_ident(r#"we"ird"#), r#""we""ird""#);
}

#[test]
fn phases_round_trip_and_the_report_marks_differences() {
    for phase in [
        Phase::Copying,
        Phase::Copied,
        Phase::Cutover,
        Phase::Switched,
        Phase::Aborted,
        Phase::Done,
    ] {
        assert_eq!(Phase::parse(phase.as_str()), Some(phase));
    }
    assert_eq!(Phase::parse("copy"), None);
    let line = |differing| verify::VerifyLine {
        table: "users".into(),
        from: "shard0".into(),
        to: "shard2".into(),
        source_rows: 10,
        target_rows: 10,
        missing: 0,
        extra: 0,
        differing,
    };
    let good = verify::VerifyReport {
        lines: vec![line(0)],
    };
    assert!(good.ok() && good.to_string().contains(" OK"));
    let bad = verify::VerifyReport {
        lines: vec![line(0), line(2)],
    };
    assert!(!bad.ok());
    let text = bad.to_string();
    let different: Vec<&str> = text.lines().filter(|l| l.ends_with("DIFFERENT")).collect();
    assert_eq!(different.len(), 1, "{text}");
    assert_eq!(different[0].split_whitespace().nth(7), Some("2"), "{text}");
}
