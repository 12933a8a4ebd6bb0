//! Fingerprints: equal across literal values, comments, spacing and case; different across anything
//! that can change a classification; never panicking. Hints in leading comments.

use super::*;
use crate::router::plan::{Kind, WriteReason};

/// Classification with no sharded table.
fn classify(sql: &str) -> crate::router::plan::Plan {
    crate::router::classify::classify(sql, &crate::sharding::Rules::default())
}

fn normalized(sql: &str) -> Vec<u8> {
    let mut out = Vec::new();
    normalize_into(sql.as_bytes(), &mut out);
    out
}

#[test]
fn literals_comments_spacing_and_case_do_not_matter() {
    let groups: &[&[&str]] = &[
        &[
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 2871;",
            "select abalance from pgbench_accounts where aid = 99;",
            "  SELECT abalance\n\tFROM pgbench_accounts -- the account\n WHERE aid =   7 ;  ",
            "/* pgscale: replica */ SELECT abalance FROM /* x */ pgbench_accounts WHERE aid = 1.5e10;",
        ],
        &[
            "SELECT * FROM t WHERE name = 'bob' AND n > 1",
            "SELECT * FROM t WHERE name = 'o''brien' AND n > 1_000",
            "SELECT * FROM t WHERE name = E'it\\'s' AND n > .5",
            "SELECT * FROM t WHERE name = $$any 'thing'$$ AND n > 0x1F",
            "SELECT * FROM t WHERE name = $tag$a $$ b$tag$ AND n > 1e-3",
            "SELECT * FROM t WHERE name = '' AND n > 0",
        ],
        &["SELECT B'1010', X'ff'", "SELECT b'1', x'00'", "SELECT 1, 'a'", "SELECT E'\\'', N'x'"],
        &["SELECT U&'\\0041'", "SELECT u&'d\\0061t'", "SELECT 'x'"],
        &["SELECT 1 /* a /* nested */ comment */ + 2", "SELECT 3 + 4"],
        &["SELECT $1, $2", "select $1 ,$2"],
        &["SELECT f(a) FROM t WHERE x IN (1, 2)", "SELECT f ( a ) FROM t WHERE x IN(1,2)"],
        &["SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE id = '1'"],
        &["", "   ", "-- nothing\n", "/* nothing */"],
    ];
    for group in groups {
        let first = fingerprint(group[0]);
        for sql in group.iter() {
            assert_eq!(
                fingerprint(sql),
                first,
                "{sql:?} vs {:?}: {:?} vs {:?}",
                group[0],
                normalized(sql),
                normalized(group[0])
            );
        }
    }
}

#[test]
fn identifiers_keywords_parameters_and_operators_matter() {
    let distinct = [
        "SELECT a FROM t",
        "SELECT b FROM t",
        "SELECT a FROM u",
        "SELECT a FROM \"T\"",
        "SELECT a FROM \"t\"",
        "SELECT a FROM t FOR UPDATE",
        "SELECT a FROM t FOR SHARE",
        "DELETE FROM t",
        "SELECT a, b FROM t",
        "SELECT ab FROM t",
        "SELECT a FROM t WHERE x = $1",
        "SELECT a FROM t WHERE x = $2",
        "SELECT a FROM t WHERE x = 1",
        "SELECT a FROM t WHERE x < 1",
        "SELECT a FROM t WHERE x <= 1",
        "SELECT a FROM t WHERE x < = 1",
        "SELECT nextval('s')",
        "SELECT currval('s')",
        "SELECT e 'x'",
        "SELECT 1for",
        "SELECT 1 for",
        "SELECT t.a",
        "SELECT t .a",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "SELECT 1",
        "SELECT 1;",
    ];
    let mut seen = std::collections::HashMap::new();
    for sql in distinct {
        if let Some(other) = seen.insert(fingerprint(sql), sql) {
            panic!(
                "{sql:?} and {other:?} share a fingerprint: {:?}",
                normalized(sql)
            );
        }
    }
}

/// The invariant the plan cache rests on: texts that differ only in literals classify alike. The one
/// exception is sqlparser refusing a literal of some type where Postgres takes it (`DELIMITER 1`):
/// then one text is unparsable (a write, the safe side) and the other has the true plan, which is
/// also right for the first text.
#[test]
fn same_fingerprint_same_plan() {
    let templates = [
        "SELECT * FROM t WHERE a = {} LIMIT {}",
        "EXPLAIN (ANALYZE {}) DELETE FROM t WHERE a = {}",
        "SET statement_timeout = {}; SELECT {}",
        "SELECT set_config('x', {}, false), {}",
        "COPY t TO STDOUT WITH (DELIMITER {}, NULL {})",
        "BEGIN READ ONLY; SELECT {}; SELECT {}",
        "SELECT {}::text FROM t FOR UPDATE OF t SKIP LOCKED LIMIT {}",
        "SELECT * FROM t FOR NO KEY UPDATE; SELECT {}, {}",
    ];
    let literals = [
        "1",
        "'x'",
        "E'\\''",
        "$$;$$",
        "2.5e3",
        "''",
        "$q$ DELETE FROM t; $q$",
    ];
    let unparsable = Kind::Write(WriteReason::Unparsable);
    for template in templates {
        let texts: Vec<String> = literals
            .iter()
            .zip(literals.iter().rev())
            .map(|(a, b)| template.replacen("{}", a, 1).replacen("{}", b, 1))
            .collect();
        let key = fingerprint(&texts[0]);
        let mut parsed: Option<Vec<Kind>> = None;
        for text in &texts {
            assert_eq!(fingerprint(text), key, "{text}");
            let kinds: Vec<_> = classify(text).statements.iter().map(|s| s.kind).collect();
            if kinds.contains(&unparsable) {
                continue;
            }
            let expected = parsed.get_or_insert_with(|| kinds.clone());
            assert_eq!(&kinds, expected, "{text}");
        }
        assert!(parsed.is_some(), "no variant of {template} parses");
    }
}

#[test]
fn never_panics() {
    let alphabet = [
        "'", "\"", "$", "$a", "$1", "-", "-", "/", "*", "e", "U&", "\\", "1", ".", " ", "é", ";",
        "x",
    ];
    // Every string of up to 3 pieces, then some long unterminated ones.
    for a in alphabet {
        for b in alphabet {
            for c in alphabet {
                let sql = format!("{a}{b}{c}");
                let _ = fingerprint(&sql);
                let _ = leading_hint(&sql);
                let _ = classify(&sql);
            }
        }
    }
    for sql in [
        "'abc", "E'abc\\", "\"abc", "/* abc", "/* /* */", "$a$ abc", "$$", "U&'", "0x", "1e+", "--",
    ] {
        let _ = fingerprint(sql);
        let _ = leading_hint(sql);
    }
}

#[test]
fn large_texts_do_not_keep_large_buffers() {
    let big = format!("SELECT {}", "a + ".repeat(100_000));
    let _ = fingerprint(&big);
    BUFFER.with(|b| assert!(b.borrow().capacity() <= KEEP_BUFFER));
    assert_eq!(fingerprint("SELECT 1"), fingerprint("SELECT 2"));
}

#[test]
fn hints() {
    let cases = [
        ("/* pgscale: primary */ SELECT 1", Some(Hint::Primary)),
        (
            "/* pgscale: replica */ INSERT INTO t VALUES (1)",
            Some(Hint::Replica),
        ),
        ("/*PGSCALE:REPLICA*/SELECT 1", Some(Hint::Replica)),
        (
            "  /*  pgscale :  Primary  */\nSELECT 1",
            Some(Hint::Primary),
        ),
        ("-- pgscale: replica\nSELECT 1", Some(Hint::Replica)),
        ("--pgscale:primary", Some(Hint::Primary)),
        (
            "/* app=web */ /* pgscale: replica */ SELECT 1",
            Some(Hint::Replica),
        ),
        (
            "-- note\n-- pgscale: primary\nSELECT 1",
            Some(Hint::Primary),
        ),
        ("SELECT 1 /* pgscale: primary */", None),
        ("SELECT '/* pgscale: primary */'", None),
        ("/* pgscale: elsewhere */ SELECT 1", None),
        ("/* pgscale: replica please */ SELECT 1", None),
        ("/* pgscale replica */ SELECT 1", None),
        ("/* pgscale: replica", None),
        ("/* not /* pgscale: replica */ still */ SELECT 1", None),
        ("", None),
        ("SELECT 1", None),
    ];
    for (sql, expected) in cases {
        assert_eq!(leading_hint(sql), expected, "{sql:?}");
    }
}

#[test]
fn hints_do_not_change_the_fingerprint() {
    assert_eq!(
        fingerprint("/* pgscale: primary */ SELECT 1"),
        fingerprint("SELECT 1")
    );
}

/// `literal_spans` finds exactly the literals the fingerprint replaces, in order, as ranges that
/// slice the text.
#[test]
fn literal_spans_are_the_fingerprint_placeholders() {
    let mut texts: Vec<String> = [
        "SELECT 'a''b', E'\\'x', $$y$$, $t$ $$ $t$, 1.5e3, .5, 0x1F, 1_000 FROM t WHERE a = -1",
        "SELECT t.5, t .5, a[1] .5, (1) .5, \"q\".5, $1.5 FROM t",
        "SELECT B'01', x'ff', N'n', U&'u' UESCAPE '!', e 'sep', 1for",
        "SELECT 'é\nü' -- 'not' \n /* '1' /* 2 */ */ , 3",
        "SELECT 'unterminated",
        "SELECT $$unterminated",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let alphabet = [
        "'", "\"", "$", "$a", "$1", "-", "/", "*", "e", "U&", "\\", "1", ".", " ", "é", ";", "x",
        ")", "]", "\n",
    ];
    for a in alphabet {
        for b in alphabet {
            for c in alphabet {
                texts.push(format!("{a}{b}{c}"));
            }
        }
    }
    for sql in &texts {
        let spans = literal_spans(sql);
        let placeholders = normalized(sql).iter().filter(|b| **b == LITERAL).count();
        assert_eq!(spans.len(), placeholders, "{sql:?}: {spans:?}");
        let mut end = 0;
        for span in &spans {
            assert!(
                span.start >= end && span.start < span.end,
                "{sql:?}: {spans:?}"
            );
            assert!(sql.get(span.clone()).is_some(), "{sql:?}: {span:?}");
            end = span.end;
        }
    }
    let sql = "SELECT 'a''b', E'\\'x', $t$ $$ $t$, 12, .5 FROM t WHERE a = -1 -- '9'";
    let literals: Vec<&str> = literal_spans(sql).into_iter().map(|r| &sql[r]).collect();
    assert_eq!(
        literals,
        ["'a''b'", "E'\\'x'", "$t$ $$ $t$", "12", ".5", "1"]
    );
}
