//! The shards one unit (a simple query string, or an extended-protocol batch up to Sync) needs,
//! folded from what each of its statements needs, and the transaction rule: a transaction lives on
//! one shard, the shard of its first statement that names one.

/// What one executed statement needs, once its key values are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Any shard will do (session commands, transaction control, reads of reference tables).
    Any,
    /// This shard.
    Shard(usize),
    /// A read of rows on these shards (sorted, at least two): it fans out to them.
    ReadShards(Vec<usize>),
    /// A key-less read of sharded tables: every shard, results merged.
    Scatter,
    /// The same statement on every shard's primary: DDL, or a key-less write when broadcast writes
    /// are allowed.
    Broadcast { ddl: bool },
    /// A write of a reference table: every shard's copy, with two-phase commit.
    ReferenceWrite,
    /// A multi-row INSERT whose rows belong to different shards (`row_shards[i]` is row i's).
    SplitInsert { row_shards: Vec<usize> },
    /// `COPY sharded FROM STDIN`: rows split to their shards; the key is field `column_index`.
    CopyIn {
        key_type: crate::sharding::KeyType,
        column_index: usize,
    },
    /// Cannot be routed correctly: the reason, for the client.
    Refuse(String),
}

/// Where a whole unit goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitShards {
    /// No statement named a shard: the transaction's shard, else the default shard.
    Any,
    One(usize),
    /// One multi-shard statement, alone in its unit (fan-out, broadcast or split insert).
    Many(Need),
    Refuse(String),
}

/// Folds the needs of one unit's statements, in order.
#[derive(Debug, Clone, Default)]
pub struct ShardFold {
    one: Option<usize>,
    many: Option<Need>,
    statements: usize,
    refused: Option<String>,
}

impl ShardFold {
    pub fn add(&mut self, need: Need) {
        if self.refused.is_some() {
            return;
        }
        match need {
            Need::Any => {}
            Need::Refuse(reason) => self.refused = Some(reason),
            Need::Shard(shard) => match self.one {
                Some(first) if first != shard => {
                    self.refused = Some(format!(
                        "these statements need shards {first} and {shard}, and pgscale cannot make \
                         one transaction span shards; send statements for different shard keys in \
                         separate transactions"
                    ))
                }
                _ => self.one = Some(shard),
            },
            many => {
                if self.many.is_none() {
                    self.many = Some(many);
                } else {
                    self.refused = Some(MIXED.to_string());
                }
            }
        }
        self.statements += 1;
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.statements == 0 && self.refused.is_none()
    }

    /// Where the unit goes.
    pub fn decide(&self) -> UnitShards {
        if let Some(reason) = &self.refused {
            return UnitShards::Refuse(reason.clone());
        }
        match (&self.many, self.one) {
            (Some(_), _) if self.statements > 1 => UnitShards::Refuse(MIXED.to_string()),
            (Some(many), _) => UnitShards::Many(many.clone()),
            (None, Some(shard)) => UnitShards::One(shard),
            (None, None) => UnitShards::Any,
        }
    }
}

const MIXED: &str = "a statement that runs on several shards (a key-less read, DDL, a broadcast \
                     write or a multi-row insert across shards) must be sent on its own, not \
                     together with other statements in one query string or batch";

/// Where a unit goes given the transaction it runs in: `bound` is the shard an open transaction
/// lives on (None outside a transaction), `default_shard` where unsharded statements go.
pub fn place(unit: UnitShards, bound: Option<usize>, default_shard: usize) -> UnitShards {
    match (unit, bound) {
        (UnitShards::Any, Some(shard)) => UnitShards::One(shard),
        (UnitShards::Any, None) => UnitShards::One(default_shard),
        (UnitShards::One(shard), Some(open)) if shard != open => UnitShards::Refuse(format!(
            "this transaction runs on shard {open}, and this statement needs shard {shard}; \
             pgscale cannot make one transaction span shards. Roll back, and run statements for \
             different shard keys in separate transactions"
        )),
        (UnitShards::Many(_), Some(open)) => UnitShards::Refuse(format!(
            "this transaction runs on shard {open}, and this statement needs several shards \
             (a key-less read, DDL, a broadcast write or a multi-row insert across shards); run \
             it outside a transaction, or add the shard key to its WHERE clause"
        )),
        (unit, _) => unit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(needs: Vec<Need>) -> UnitShards {
        let mut f = ShardFold::default();
        for n in needs {
            f.add(n);
        }
        f.decide()
    }

    #[test]
    fn keyed_statements_on_one_shard_go_there() {
        assert_eq!(fold(vec![]), UnitShards::Any);
        assert_eq!(fold(vec![Need::Any, Need::Any]), UnitShards::Any);
        assert_eq!(
            fold(vec![Need::Any, Need::Shard(2), Need::Shard(2), Need::Any]),
            UnitShards::One(2)
        );
    }

    #[test]
    fn two_shards_in_one_unit_are_refused() {
        let UnitShards::Refuse(reason) = fold(vec![Need::Shard(1), Need::Any, Need::Shard(2)])
        else {
            panic!("expected a refusal");
        };
        assert!(reason.contains("shards 1 and 2"), "{reason}");
    }

    #[test]
    fn a_multi_shard_statement_must_be_alone() {
        assert_eq!(fold(vec![Need::Scatter]), UnitShards::Many(Need::Scatter));
        for mixed in [
            vec![Need::Scatter, Need::Shard(1)],
            vec![Need::Shard(1), Need::Broadcast { ddl: true }],
            vec![Need::Scatter, Need::Scatter],
            vec![Need::Any, Need::Scatter],
        ] {
            assert!(
                matches!(fold(mixed.clone()), UnitShards::Refuse(r) if r.contains("on its own")),
                "{mixed:?}"
            );
        }
    }

    #[test]
    fn the_first_refusal_wins() {
        assert_eq!(
            fold(vec![
                Need::Shard(1),
                Need::Refuse("first".into()),
                Need::Refuse("second".into())
            ]),
            UnitShards::Refuse("first".into())
        );
    }

    #[test]
    fn a_transaction_stays_on_its_shard() {
        assert_eq!(place(UnitShards::Any, None, 0), UnitShards::One(0));
        assert_eq!(place(UnitShards::Any, Some(2), 0), UnitShards::One(2));
        assert_eq!(place(UnitShards::One(2), Some(2), 0), UnitShards::One(2));
        assert!(matches!(
            place(UnitShards::One(1), Some(2), 0),
            UnitShards::Refuse(r) if r.contains("runs on shard 2") && r.contains("needs shard 1")
        ));
        assert!(matches!(
            place(UnitShards::Many(Need::Scatter), Some(0), 0),
            UnitShards::Refuse(_)
        ));
        assert_eq!(
            place(UnitShards::Many(Need::Scatter), None, 0),
            UnitShards::Many(Need::Scatter)
        );
    }
}
