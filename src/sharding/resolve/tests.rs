//! Resolution: literals in every form the fingerprint shares, parameters in both formats, arrays
//! in both formats, NULLs, and malformed Bind bodies (errors, never panics).

use super::*;
use crate::sharding::key::KeyError;

fn ring() -> Ring {
    Ring::new(&["s0", "s1", "s2", "s3"], 64).expect("ring")
}

fn shard(key: i64) -> usize {
    ring().shard_of(&ShardKey::Int(key))
}

fn one(sql: &str, r: KeyRef, params: Option<&BindParams>) -> Result<ShardSet, ResolveError> {
    resolve(&Keys::One(r), KeyType::BigInt, sql, params, &ring())
}

/// Two keys on different shards, and keys covering every shard.
fn spread_keys() -> (i64, i64, Vec<i64>) {
    let a = 1;
    let b = (2..)
        .find(|k| shard(*k) != shard(a))
        .expect("another shard");
    let mut all = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for k in 1.. {
        if seen.insert(shard(k)) {
            all.push(k);
        }
        if seen.len() == 4 {
            break;
        }
    }
    (a, b, all)
}

#[test]
fn literals_in_every_form() {
    let cases = [
        ("SELECT * FROM users WHERE id = 42", KeyRef::Literal(0), 42),
        (
            "SELECT * FROM users WHERE id = '42'",
            KeyRef::Literal(0),
            42,
        ),
        (
            "SELECT * FROM users WHERE id = ' 42 '",
            KeyRef::Literal(0),
            42,
        ),
        (
            "SELECT * FROM users WHERE id = N'42'",
            KeyRef::Literal(0),
            42,
        ),
        (
            "SELECT * FROM users WHERE id = E'42'",
            KeyRef::Literal(0),
            42,
        ),
        (
            "SELECT * FROM users WHERE id = $$42$$",
            KeyRef::Literal(0),
            42,
        ),
        (
            "SELECT * FROM users WHERE id = $k$42$k$",
            KeyRef::Literal(0),
            42,
        ),
        (
            "SELECT * FROM users WHERE id = -42",
            KeyRef::NegLiteral(0),
            -42,
        ),
        (
            "SELECT 'x', 1 FROM users WHERE id = 7",
            KeyRef::Literal(2),
            7,
        ),
        (
            "SELECT * FROM users WHERE id = -9223372036854775808",
            KeyRef::NegLiteral(0),
            i64::MIN,
        ),
    ];
    for (sql, r, key) in cases {
        assert_eq!(one(sql, r, None), Ok(ShardSet::One(shard(key))), "{sql}");
    }
}

#[test]
fn literals_that_are_not_keys() {
    let cases: [(&str, KeyRef, ResolveError); 7] = [
        (
            "SELECT * FROM users WHERE id = 1.5",
            KeyRef::Literal(0),
            ResolveError::Key(KeyError::NotAnInteger),
        ),
        (
            "SELECT * FROM users WHERE id = 'x'",
            KeyRef::Literal(0),
            ResolveError::Key(KeyError::NotAnInteger),
        ),
        (
            "SELECT * FROM users WHERE id = 99999999999999999999",
            KeyRef::Literal(0),
            ResolveError::Key(KeyError::OutOfRange(KeyType::BigInt)),
        ),
        (
            "SELECT * FROM users WHERE id = E'4\\x32'",
            KeyRef::Literal(0),
            ResolveError::LiteralForm,
        ),
        (
            "SELECT * FROM users WHERE id = B'101'",
            KeyRef::Literal(0),
            ResolveError::LiteralForm,
        ),
        (
            "SELECT * FROM users WHERE id = -'5'",
            KeyRef::NegLiteral(0),
            ResolveError::LiteralForm,
        ),
        (
            "SELECT * FROM users WHERE id = 5",
            KeyRef::Literal(1),
            ResolveError::MissingLiteral(1),
        ),
    ];
    for (sql, r, error) in cases {
        assert_eq!(one(sql, r, None), Err(error), "{sql}");
    }
    // Unterminated forms (a text that shares a cached plan's fingerprint but is not SQL).
    for sql in [
        "SELECT x WHERE id = $$5",
        "SELECT x WHERE id = '5",
        "SELECT x WHERE id = $a$5$b$",
    ] {
        assert!(one(sql, KeyRef::Literal(0), None).is_err(), "{sql}");
    }
}

#[test]
fn text_and_uuid_keys() {
    let ring = ring();
    let sql = "SELECT * FROM events WHERE tenant = 'o''brien'";
    let got = resolve(
        &Keys::One(KeyRef::Literal(0)),
        KeyType::Text,
        sql,
        None,
        &ring,
    );
    let want = ring.shard_of(&ShardKey::Text("o'brien".into()));
    assert_eq!(got, Ok(ShardSet::One(want)));
    let sql = "SELECT x WHERE id = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'";
    let got = resolve(
        &Keys::One(KeyRef::Literal(0)),
        KeyType::Uuid,
        sql,
        None,
        &ring,
    );
    let key = ShardKey::from_text(KeyType::Uuid, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(got, Ok(ShardSet::One(ring.shard_of(&key.expect("uuid")))));
    // A bare number is no text key.
    let got = resolve(
        &Keys::One(KeyRef::Literal(0)),
        KeyType::Text,
        "SELECT x WHERE t = 5",
        None,
        &ring,
    );
    assert_eq!(got, Err(ResolveError::Key(KeyError::UnsupportedLiteral)));
}

#[test]
fn parameters_in_both_formats() {
    let sql = "SELECT * FROM users WHERE id = $1";
    let eight = 42i64.to_be_bytes();
    let four = 42i32.to_be_bytes();
    for param in [
        Param {
            binary: false,
            value: Some(b"42"),
        },
        Param {
            binary: true,
            value: Some(&eight),
        },
        Param {
            binary: true,
            value: Some(&four),
        },
    ] {
        let params = BindParams::new(vec![param]);
        assert_eq!(
            one(sql, KeyRef::Param(1), Some(&params)),
            Ok(ShardSet::One(shard(42)))
        );
    }
    let params = BindParams::new(vec![Param {
        binary: false,
        value: None,
    }]);
    assert_eq!(
        one(sql, KeyRef::Param(1), Some(&params)),
        Err(ResolveError::NullKey)
    );
    assert_eq!(
        one(sql, KeyRef::Param(2), Some(&params)),
        Err(ResolveError::MissingParam { n: 2, bound: 1 })
    );
    assert_eq!(
        one(sql, KeyRef::Param(1), None),
        Err(ResolveError::NoParams(1))
    );
    let bad = BindParams::new(vec![Param {
        binary: true,
        value: Some(b"abc"),
    }]);
    assert!(matches!(
        one(sql, KeyRef::Param(1), Some(&bad)),
        Err(ResolveError::Key(KeyError::WrongLength { .. }))
    ));
}

#[test]
fn several_keys() {
    let (a, b, all) = spread_keys();
    let sql = format!("SELECT * FROM users WHERE id IN ({a}, {b}, {a}, $1)");
    let null = BindParams::new(vec![Param {
        binary: false,
        value: None,
    }]);
    let keys = Keys::AnyOf(
        [
            KeyRef::Literal(0),
            KeyRef::Literal(1),
            KeyRef::Literal(2),
            KeyRef::Param(1),
        ]
        .into(),
    );
    let mut want = vec![shard(a), shard(b)];
    want.sort_unstable();
    assert_eq!(
        resolve(&keys, KeyType::BigInt, &sql, Some(&null), &ring()),
        Ok(ShardSet::Some(want))
    );
    let keys = Keys::AnyOf([KeyRef::Literal(0), KeyRef::Literal(2)].into());
    assert_eq!(
        resolve(&keys, KeyType::BigInt, &sql, None, &ring()),
        Ok(ShardSet::One(shard(a)))
    );
    // Only NULLs: no row anywhere, any shard answers.
    let keys = Keys::AnyOf([KeyRef::Param(1)].into());
    assert_eq!(
        resolve(&keys, KeyType::BigInt, &sql, Some(&null), &ring()),
        Ok(ShardSet::One(0))
    );
    // Every shard.
    let list: Vec<String> = all.iter().map(i64::to_string).collect();
    let sql = format!("SELECT * FROM users WHERE id IN ({})", list.join(", "));
    let refs: Vec<KeyRef> = (0..all.len() as u32).map(KeyRef::Literal).collect();
    let keys = Keys::AnyOf(refs.into());
    assert_eq!(
        resolve(&keys, KeyType::BigInt, &sql, None, &ring()),
        Ok(ShardSet::All)
    );
}

/// A binary int array: ndim, flags, oid, dims, elements.
fn binary_array(oid: u32, elements: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&i32::from(elements.contains(&None)).to_be_bytes());
    out.extend_from_slice(&oid.to_be_bytes());
    out.extend_from_slice(&(elements.len() as i32).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    for element in elements {
        match element {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
    out
}

#[test]
fn array_parameters() {
    let (a, b, _) = spread_keys();
    let mut want = vec![shard(a), shard(b)];
    want.sort_unstable();
    let want = ShardSet::Some(want);
    let sql = "SELECT * FROM users WHERE id = ANY($1)";
    let resolve_with = |param: Param| {
        let params = BindParams::new(vec![param]);
        resolve(
            &Keys::ArrayParam(1),
            KeyType::BigInt,
            sql,
            Some(&params),
            &ring(),
        )
    };
    let text = |s: &'static str| Param {
        binary: false,
        value: Some(s.as_bytes()),
    };
    let owned: Vec<String> = vec![
        format!("{{{a},{b}}}"),
        format!(" {{ {a} , NULL, \"{b}\" }} "),
        format!("[0:1]={{{a},{b}}}"),
        format!("{{{{{a}}},{{{b}}}}}"),
    ];
    for value in &owned {
        let got = resolve_with(Param {
            binary: false,
            value: Some(value.as_bytes()),
        });
        assert_eq!(got, Ok(want.clone()), "{value}");
    }
    let (a8, b8) = (a.to_be_bytes(), b.to_be_bytes());
    let int8 = binary_array(20, &[Some(&a8), None, Some(&b8)]);
    assert_eq!(
        resolve_with(Param {
            binary: true,
            value: Some(&int8)
        }),
        Ok(want.clone())
    );
    let (a4, b4) = ((a as i32).to_be_bytes(), (b as i32).to_be_bytes());
    let int4 = binary_array(23, &[Some(&a4), Some(&b4)]);
    assert_eq!(
        resolve_with(Param {
            binary: true,
            value: Some(&int4)
        }),
        Ok(want)
    );
    // No key: no row anywhere.
    assert_eq!(resolve_with(text("{}")), Ok(ShardSet::One(0)));
    assert_eq!(resolve_with(text("{NULL}")), Ok(ShardSet::One(0)));
    let empty = binary_array(20, &[]);
    assert_eq!(
        resolve_with(Param {
            binary: true,
            value: Some(&empty)
        }),
        Ok(ShardSet::One(0))
    );
    assert_eq!(
        resolve_with(Param {
            binary: false,
            value: None
        }),
        Ok(ShardSet::One(0))
    );
    // Malformed or mistyped.
    let text_elements = binary_array(25, &[Some(b"1")]);
    assert_eq!(
        resolve_with(Param {
            binary: true,
            value: Some(&text_elements)
        }),
        Err(ResolveError::ArrayType(25))
    );
    for bad in [
        "", "1,2", "{1,2", "{1,2}}", "{1}x", "{\"1}", "{a\\,b}", "{x}",
    ] {
        assert!(resolve_with(text(bad)).is_err(), "{bad:?}");
    }
    for cut in 0..int8.len() {
        let got = resolve_with(Param {
            binary: true,
            value: Some(&int8[..cut]),
        });
        assert!(got.is_err(), "cut at {cut}");
    }
}

#[test]
fn text_arrays_of_text_keys() {
    let ring = ring();
    let value = br#"{"a,b","c\"d", plain , "NULL", NULL}"#;
    let params = BindParams::new(vec![Param {
        binary: false,
        value: Some(value),
    }]);
    let got = resolve(
        &Keys::ArrayParam(1),
        KeyType::Text,
        "",
        Some(&params),
        &ring,
    );
    let shards: Vec<usize> = ["a,b", "c\"d", "plain", "NULL"]
        .iter()
        .map(|t| ring.shard_of(&ShardKey::Text((*t).into())))
        .collect();
    assert_eq!(got, Ok(ShardSet::of(shards, 4)));
}

#[test]
fn insert_rows() {
    let (a, b, _) = spread_keys();
    let sql = format!("INSERT INTO users (id, n) VALUES ({a}, 'x'), (-{b}, 'y'), ($1, 'z')");
    let eight = b.to_be_bytes();
    let params = BindParams::new(vec![Param {
        binary: true,
        value: Some(&eight),
    }]);
    let rows = [KeyRef::Literal(0), KeyRef::NegLiteral(2), KeyRef::Param(1)];
    assert_eq!(
        resolve_insert_rows(&rows, KeyType::BigInt, &sql, Some(&params), &ring()),
        Ok(vec![shard(a), shard(-b), shard(b)])
    );
    let null = BindParams::new(vec![Param {
        binary: false,
        value: None,
    }]);
    assert_eq!(
        resolve_insert_rows(&rows, KeyType::BigInt, &sql, Some(&null), &ring()),
        Err(ResolveError::NullKey)
    );
}

/// A Bind body: portal, statement, formats, values, result formats.
fn bind_body(formats: &[i16], values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = b"portal\0stmt\0".to_vec();
    out.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for f in formats {
        out.extend_from_slice(&f.to_be_bytes());
    }
    out.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        match v {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
    out.extend_from_slice(&0i16.to_be_bytes());
    out
}

#[test]
fn bind_bodies() {
    let eight = 7i64.to_be_bytes();
    let body = bind_body(&[0, 1, 0], &[Some(b"abc"), Some(&eight), None]);
    let params = BindParams::parse(&body).expect("parses");
    assert_eq!(params.len(), 3);
    assert_eq!(
        params.get(2),
        Ok(Param {
            binary: true,
            value: Some(&eight)
        })
    );
    assert_eq!(
        params.get(3),
        Ok(Param {
            binary: false,
            value: None
        })
    );
    assert!(params.get(0).is_err() && params.get(4).is_err());
    // One format for all.
    let body = bind_body(&[1], &[Some(&eight), Some(&eight)]);
    let params = BindParams::parse(&body).expect("parses");
    assert!(params.get(2).expect("$2").binary);
    // No formats: all text.
    let body = bind_body(&[], &[Some(b"5")]);
    assert!(
        !BindParams::parse(&body)
            .expect("parses")
            .get(1)
            .expect("$1")
            .binary
    );
    // Inconsistent or unknown formats.
    assert_eq!(
        BindParams::parse(&bind_body(&[0, 1], &[None, None, None])),
        Err(ResolveError::FormatCount {
            formats: 2,
            params: 3
        })
    );
    assert_eq!(
        BindParams::parse(&bind_body(&[2], &[None])),
        Err(ResolveError::Format(2))
    );
    // Every truncation fails cleanly (the last two bytes are result formats, not read).
    let body = bind_body(&[0, 1, 0], &[Some(b"abc"), Some(&eight), None]);
    for cut in 0..body.len() - 2 {
        assert!(BindParams::parse(&body[..cut]).is_err(), "cut at {cut}");
    }
    let mut negative = bind_body(&[], &[Some(b"5")]);
    let at = b"portal\0stmt\0".len() + 4;
    negative[at..at + 4].copy_from_slice(&(-2i32).to_be_bytes());
    assert!(BindParams::parse(&negative).is_err());
}

#[test]
fn never_panics_on_garbage() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let ring = ring();
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let _ = BindParams::parse(&bytes);
        for binary in [false, true] {
            let params = BindParams::new(vec![Param {
                binary,
                value: Some(&bytes),
            }]);
            for key_type in [KeyType::BigInt, KeyType::Text, KeyType::Uuid] {
                let _ = resolve(&Keys::ArrayParam(1), key_type, "", Some(&params), &ring);
                let _ = resolve(
                    &Keys::One(KeyRef::Param(1)),
                    key_type,
                    "",
                    Some(&params),
                    &ring,
                );
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = literal_values(&text);
        let _ = one(&text, KeyRef::Literal(0), None);
        let _ = one(&text, KeyRef::NegLiteral(0), None);
    }
}

#[test]
fn literal_values_are_the_literals() {
    assert_eq!(
        literal_values("SELECT 'a''b', E'\\'' , $$x$$, -12.5e3 FROM t -- '9'\n WHERE x = 1"),
        ["'a''b'", "E'\\''", "$$x$$", "12.5e3", "1"]
    );
}
