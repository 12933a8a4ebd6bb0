//! Shard keys: the three input forms agree, integers of every width are one key, bad input is a
//! typed error, and the canonical bytes are as documented.

use super::*;

fn canonical(key: &ShardKey) -> Vec<u8> {
    key.with_canonical_bytes(<[u8]>::to_vec)
}

const UUID_BYTES: [u8; 16] = [
    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
];

#[test]
fn canonical_bytes_are_as_documented() {
    assert_eq!(canonical(&ShardKey::Int(1)), [0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(canonical(&ShardKey::Int(-1)), [0xff; 8]);
    assert_eq!(
        canonical(&ShardKey::Int(0x0102_0304_0506_0708)),
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(
        canonical(&ShardKey::Text("héllo".into())),
        "héllo".as_bytes()
    );
    assert_eq!(canonical(&ShardKey::Text(String::new())), b"");
    assert_eq!(canonical(&ShardKey::Uuid(UUID_BYTES)), UUID_BYTES);
}

#[test]
fn integers_agree_across_forms_and_widths() {
    for value in [
        0i64,
        1,
        -1,
        42,
        -42,
        32767,
        -32768,
        i64::from(i32::MAX),
        i64::from(i32::MIN),
    ] {
        let want = ShardKey::Int(value);
        for ty in [KeyType::Integer, KeyType::BigInt] {
            let text = value.to_string();
            assert_eq!(
                ShardKey::from_literal(ty, &text),
                Ok(want.clone()),
                "{text}"
            );
            assert_eq!(
                ShardKey::from_literal(ty, &format!("'{text}'")),
                Ok(want.clone())
            );
            assert_eq!(ShardKey::from_text(ty, text.as_bytes()), Ok(want.clone()));
            assert_eq!(
                ShardKey::from_text(ty, format!("  {text}\n").as_bytes()),
                Ok(want.clone())
            );
            assert_eq!(
                ShardKey::from_binary(ty, &value.to_be_bytes()),
                Ok(want.clone())
            );
            let int4 = i32::try_from(value).expect("fits int4");
            assert_eq!(
                ShardKey::from_binary(ty, &int4.to_be_bytes()),
                Ok(want.clone())
            );
            if let Ok(int2) = i16::try_from(value) {
                assert_eq!(
                    ShardKey::from_binary(ty, &int2.to_be_bytes()),
                    Ok(want.clone())
                );
            }
        }
    }
    assert_eq!(
        ShardKey::from_text(KeyType::BigInt, b"+7"),
        Ok(ShardKey::Int(7))
    );
    let max = i64::MAX.to_string();
    assert_eq!(
        ShardKey::from_literal(KeyType::BigInt, &max),
        Ok(ShardKey::Int(i64::MAX))
    );
    assert_eq!(
        ShardKey::from_binary(KeyType::BigInt, &i64::MIN.to_be_bytes()),
        Ok(ShardKey::Int(i64::MIN))
    );
}

#[test]
fn text_agrees_across_forms() {
    for value in ["", "bob", "o'brien", "héllo wörld", " padded ", "42"] {
        let want = ShardKey::Text(value.to_owned());
        let literal = format!("'{}'", value.replace('\'', "''"));
        assert_eq!(
            ShardKey::from_literal(KeyType::Text, &literal),
            Ok(want.clone())
        );
        assert_eq!(
            ShardKey::from_text(KeyType::Text, value.as_bytes()),
            Ok(want.clone())
        );
        assert_eq!(
            ShardKey::from_binary(KeyType::Text, value.as_bytes()),
            Ok(want)
        );
    }
}

#[test]
fn uuids_agree_across_forms_and_spellings() {
    let want = Ok(ShardKey::Uuid(UUID_BYTES));
    for text in [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
    ] {
        assert_eq!(
            ShardKey::from_text(KeyType::Uuid, text.as_bytes()),
            want,
            "{text}"
        );
        assert_eq!(
            ShardKey::from_literal(KeyType::Uuid, &format!("'{text}'")),
            want
        );
    }
    assert_eq!(ShardKey::from_binary(KeyType::Uuid, &UUID_BYTES), want);
}

#[test]
fn bad_input_is_a_typed_error() {
    use KeyError::*;
    let int = KeyType::Integer;
    let big = KeyType::BigInt;
    for bad in [
        "", "-", "+", "1.5", "1e3", "abc", "0x10", "1 2", "--1", "+-1", "1_000",
    ] {
        assert_eq!(
            ShardKey::from_text(big, bad.as_bytes()),
            Err(NotAnInteger),
            "{bad:?}"
        );
    }
    assert_eq!(
        ShardKey::from_text(int, b"2147483648"),
        Err(OutOfRange(int))
    );
    assert_eq!(
        ShardKey::from_text(int, b"-2147483649"),
        Err(OutOfRange(int))
    );
    assert_eq!(
        ShardKey::from_text(big, b"9223372036854775808"),
        Err(OutOfRange(big))
    );
    assert_eq!(
        ShardKey::from_binary(int, &(1i64 << 40).to_be_bytes()),
        Err(OutOfRange(int))
    );
    for len in [0, 1, 3, 5, 16] {
        assert_eq!(
            ShardKey::from_binary(big, &vec![0; len]),
            Err(WrongLength { ty: big, len })
        );
    }
    let uuid = KeyType::Uuid;
    assert_eq!(
        ShardKey::from_binary(uuid, &[0; 15]),
        Err(WrongLength { ty: uuid, len: 15 })
    );
    for bad in [
        "",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
        "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ] {
        assert_eq!(
            ShardKey::from_text(uuid, bad.as_bytes()),
            Err(BadUuid),
            "{bad:?}"
        );
    }
    assert_eq!(
        ShardKey::from_text(KeyType::Text, &[0xff, 0xfe]),
        Err(NotUtf8)
    );
    assert_eq!(ShardKey::from_binary(KeyType::Text, &[0xc3]), Err(NotUtf8));
    assert_eq!(ShardKey::from_text(big, &[0xff]), Err(NotUtf8));
}

#[test]
fn unsupported_literals_are_refused() {
    for (ty, literal) in [
        (KeyType::Text, "42"),
        (KeyType::Uuid, "42"),
        (KeyType::Text, "'unterminated"),
        (KeyType::Text, "'a'b'"),
        (KeyType::Text, "E'a\\'b'"),
        (KeyType::Text, "$$a$$"),
    ] {
        assert_eq!(
            ShardKey::from_literal(ty, literal),
            Err(KeyError::UnsupportedLiteral),
            "{literal}"
        );
    }
    // A quoted non-number for an integer key is a number error, as Postgres would report.
    assert_eq!(
        ShardKey::from_literal(KeyType::BigInt, "'x'"),
        Err(KeyError::NotAnInteger)
    );
}
