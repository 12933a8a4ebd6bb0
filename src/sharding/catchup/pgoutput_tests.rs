use super::*;

/// Builds message bytes field by field.
#[derive(Default)]
struct B(Vec<u8>);

impl B {
    fn u8(mut self, v: u8) -> B {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn s(mut self, v: &str) -> B {
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
        self
    }
    fn text(self, v: &str) -> B {
        let b = self.u8(b't').u32(v.len() as u32);
        let mut b = b;
        b.0.extend_from_slice(v.as_bytes());
        b
    }
}

fn relation_bytes() -> Vec<u8> {
    B::default()
        .u8(b'R')
        .u32(16384)
        .s("public")
        .s("users")
        .u8(b'd')
        .u16(2)
        .u8(1)
        .s("id")
        .u32(20)
        .i32(-1)
        .u8(0)
        .s("name")
        .u32(25)
        .i32(-1)
        .0
}

fn all_messages() -> Vec<Vec<u8>> {
    vec![
        B::default().u8(b'B').u64(0x100).u64(7).u32(42).0,
        B::default().u8(b'C').u8(0).u64(0x100).u64(0x130).u64(7).0,
        B::default().u8(b'O').u64(5).s("origin").0,
        relation_bytes(),
        B::default().u8(b'Y').u32(99).s("public").s("mood").0,
        B::default()
            .u8(b'I')
            .u32(16384)
            .u8(b'N')
            .u16(2)
            .text("1")
            .u8(b'n')
            .0,
        B::default()
            .u8(b'U')
            .u32(16384)
            .u8(b'K')
            .u16(2)
            .text("1")
            .u8(b'n')
            .u8(b'N')
            .u16(2)
            .text("2")
            .u8(b'u')
            .0,
        B::default()
            .u8(b'U')
            .u32(16384)
            .u8(b'N')
            .u16(2)
            .text("2")
            .text("bob")
            .0,
        B::default()
            .u8(b'D')
            .u32(16384)
            .u8(b'O')
            .u16(2)
            .text("2")
            .text("bob")
            .0,
        B::default().u8(b'T').u32(2).u8(1).u32(16384).u32(16390).0,
        B::default()
            .u8(b'M')
            .u8(1)
            .u64(0x140)
            .s("pfx")
            .u32(3)
            .u8(1)
            .u8(2)
            .u8(3)
            .0,
    ]
}

#[test]
fn decodes_every_message_kind() {
    let decoded: Vec<Message> = all_messages()
        .iter()
        .map(|m| decode(m))
        .collect::<Result<_, _>>()
        .expect("all decode");
    let t = |v: &str| Value::Text(v.as_bytes().to_vec());
    assert_eq!(
        decoded[0],
        Message::Begin {
            final_lsn: 0x100,
            xid: 42
        }
    );
    assert_eq!(
        decoded[1],
        Message::Commit {
            commit_lsn: 0x100,
            end_lsn: 0x130
        }
    );
    assert_eq!(
        decoded[2],
        Message::Origin {
            name: "origin".into()
        }
    );
    let Message::Relation(rel) = &decoded[3] else {
        panic!("not a relation: {:?}", decoded[3]);
    };
    assert_eq!(
        (rel.oid, rel.namespace.as_str(), rel.name.as_str()),
        (16384, "public", "users")
    );
    assert_eq!(rel.replica_identity, b'd');
    assert_eq!(rel.columns.len(), 2);
    assert!(rel.columns[0].key && !rel.columns[1].key);
    assert_eq!(
        (
            rel.columns[1].name.as_str(),
            rel.columns[1].type_oid,
            rel.columns[1].type_modifier
        ),
        ("name", 25, -1)
    );
    assert_eq!(
        decoded[4],
        Message::Type {
            oid: 99,
            namespace: "public".into(),
            name: "mood".into()
        }
    );
    assert_eq!(
        decoded[5],
        Message::Insert {
            relation: 16384,
            new: Tuple(vec![t("1"), Value::Null])
        }
    );
    assert_eq!(
        decoded[6],
        Message::Update {
            relation: 16384,
            old: Some(Tuple(vec![t("1"), Value::Null])),
            new: Tuple(vec![t("2"), Value::UnchangedToast])
        }
    );
    assert_eq!(
        decoded[7],
        Message::Update {
            relation: 16384,
            old: None,
            new: Tuple(vec![t("2"), t("bob")])
        }
    );
    assert_eq!(
        decoded[8],
        Message::Delete {
            relation: 16384,
            old: Tuple(vec![t("2"), t("bob")])
        }
    );
    assert_eq!(
        decoded[9],
        Message::Truncate {
            relations: vec![16384, 16390],
            options: 1
        }
    );
    assert_eq!(
        decoded[10],
        Message::Message {
            prefix: "pfx".into()
        }
    );
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for message in all_messages() {
        for len in 0..message.len() {
            assert!(
                decode(&message[..len]).is_err(),
                "prefix of {len} bytes of {:?} decoded",
                message[0] as char
            );
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    for message in all_messages() {
        let mut longer = message.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }
}

#[test]
fn malformed_input_is_an_error() {
    // Unknown message type.
    assert!(decode(b"Z").is_err());
    // Insert without the 'N' marker.
    assert!(decode(&B::default().u8(b'I').u32(1).u8(b'X').u16(0).0).is_err());
    // Update / delete with a bad tuple marker.
    assert!(decode(&B::default().u8(b'U').u32(1).u8(b'Q').u16(0).0).is_err());
    assert!(decode(&B::default().u8(b'D').u32(1).u8(b'N').u16(0).0).is_err());
    // Binary values do not exist in protocol version 1; unknown kinds neither.
    for kind in [b'b', b'x'] {
        let m = B::default()
            .u8(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(kind)
            .u32(0)
            .0;
        assert!(decode(&m).is_err());
    }
    // A text value claiming more bytes than there are.
    let m = B::default()
        .u8(b'I')
        .u32(1)
        .u8(b'N')
        .u16(1)
        .u8(b't')
        .u32(u32::MAX)
        .0;
    assert!(decode(&m).is_err());
    // A huge column or relation count with nothing behind it.
    assert!(decode(&B::default().u8(b'I').u32(1).u8(b'N').u16(u16::MAX).0).is_err());
    assert!(decode(&B::default().u8(b'T').u32(u32::MAX).u8(0).0).is_err());
    // Names that are not UTF-8.
    let mut m = B::default().u8(b'Y').u32(1).0;
    m.extend_from_slice(&[0xff, 0]);
    m.extend_from_slice(b"x\0");
    assert!(decode(&m).is_err());
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz: mutate valid messages byte by byte.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for message in all_messages() {
        for _ in 0..500 {
            let mut m = message.clone();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state as usize) % m.len();
            m[at] = (state >> 32) as u8;
            let _ = decode(&m);
        }
    }
}
