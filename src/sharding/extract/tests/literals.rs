//! Literal numbering: the n-th literal of the lexer is the literal the AST means, whatever the
//! text around it (lines, comments holding quotes, prefixed strings, dollar quotes, signs).

use super::Want::*;
use super::{check, Neg, L, P};

#[test]
fn literal_positions_follow_the_lexer() {
    check(&[
        (
            "SELECT * FROM users WHERE name = 'it''s' AND id = 3",
            One(L(1)),
        ),
        (
            "SELECT * FROM users\nWHERE name = 'a'\n  AND id =\n 42",
            One(L(1)),
        ),
        ("SELECT * FROM users -- it's\nWHERE id = 42", One(L(0))),
        ("SELECT * FROM users /* 'x' 1 2 */ WHERE id = 42", One(L(0))),
        (
            "SELECT * FROM users /* a /* nested 'q' */ */ WHERE id = 42",
            One(L(0)),
        ),
        (
            "SELECT * FROM users WHERE n = E'a\\'b' AND id = 7",
            One(L(1)),
        ),
        (
            "SELECT * FROM users WHERE n = $$x'y$$ AND id = 7",
            One(L(1)),
        ),
        (
            "SELECT * FROM users WHERE n = $q$ $$ ' $q$ AND id = $2",
            One(P(2)),
        ),
        (
            "SELECT 'é', * FROM users WHERE n = 'ü' AND id = 9",
            One(L(2)),
        ),
        (
            "SELECT 'é\nü', 1.5e3, * FROM users WHERE id = -9",
            One(Neg(2)),
        ),
        (
            "SELECT * FROM users WHERE id = 5\r\n AND x = 'a'",
            One(L(0)),
        ),
        (
            "SELECT * FROM users WHERE x = B'01' AND y = X'ff' AND id = '12'",
            One(L(2)),
        ),
        ("SELECT * FROM users WHERE x = U&'a' AND id = 12", One(L(1))),
        (
            "SELECT * FROM users WHERE id IN (1, -2, '3')",
            AnyOf(&[L(0), Neg(1), L(2)]),
        ),
    ]);
}

/// Against the lexer directly: the AST's value for `id = …` spans exactly literal n.
#[test]
fn spans_match_the_lexer() {
    use crate::router::fingerprint::literal_spans;
    let cases = [
        ("SELECT * FROM users WHERE id = 42", 0, "42"),
        ("SELECT 'a'\n, 'b' FROM users WHERE id = '7'", 2, "'7'"),
        ("SELECT 'ü', $$é$$ FROM users WHERE id = 1e3", 2, "1e3"),
        ("SELECT E'\\n', * FROM users WHERE id = .5", 1, ".5"),
        ("SELECT * FROM users WHERE id = -17", 0, "17"),
    ];
    for (sql, n, text) in cases {
        let spans = literal_spans(sql);
        assert_eq!(&sql[spans[n].clone()], text, "{sql}");
        match super::plan(sql) {
            crate::sharding::ShardPlan::Keyed { keys, .. } => {
                let r = match keys {
                    crate::sharding::Keys::One(r) => r,
                    other => panic!("{sql}: {other:?}"),
                };
                assert!(
                    r == crate::sharding::KeyRef::Literal(n as u32)
                        || r == crate::sharding::KeyRef::NegLiteral(n as u32),
                    "{sql}: {r:?}"
                );
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
}
