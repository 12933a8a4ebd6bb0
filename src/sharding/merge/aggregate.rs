//! Combining shards' partial aggregates within a group, and the final values in the types and
//! formats Postgres returns: count and sum(int2/int4) as int8, sum(int8/numeric) as numeric with
//! the largest input scale, sum(float) in its own type, min/max as the winning shard's bytes,
//! avg as `numeric_div(sum, count)` (or float8 division for float input).

use bytes::Bytes;

use super::error::MergeError;
use super::numeric::Numeric;
use super::plan::Role;
use super::values::{self, oid, SortValue};
use super::wire::{Column, Format};

/// How values compare and print, from the caller's session.
#[derive(Debug, Clone, Copy)]
pub(super) struct Context {
    pub bytewise_text: bool,
    pub shortest_floats: bool,
}

/// One shard column's running combination within one group.
#[derive(Debug)]
pub(super) enum Acc {
    /// GROUP BY keys and values the group determines: the first shard's value.
    First(Option<Option<Bytes>>),
    Count(i64),
    /// Partial sums of int2/int4, which shards return as int8. `None` while all are NULL.
    SumInt(Option<i64>),
    SumNumeric(Option<Numeric>),
    /// Partial sums of float4 (`real`, added in float4 as Postgres does) or float8.
    SumFloat {
        sum: Option<f64>,
        real: bool,
    },
    Extreme {
        best: Option<(Bytes, SortValue)>,
        max: bool,
        bytewise: bool,
    },
}

impl Acc {
    /// An empty accumulator for a shard column; refuses types the role cannot combine.
    pub(super) fn new(role: Role, col: &Column) -> Result<Acc, MergeError> {
        let unsupported = |what| MergeError::UnsupportedType {
            what,
            type_oid: col.type_oid,
        };
        Ok(match role {
            Role::Key | Role::Carried => Acc::First(None),
            Role::Count if col.type_oid == oid::INT8 => Acc::Count(0),
            Role::Count => return Err(unsupported("count")),
            Role::Sum => match col.type_oid {
                oid::INT8 => Acc::SumInt(None),
                oid::NUMERIC => Acc::SumNumeric(None),
                oid::FLOAT4 => Acc::SumFloat {
                    sum: None,
                    real: true,
                },
                oid::FLOAT8 => Acc::SumFloat {
                    sum: None,
                    real: false,
                },
                _ => return Err(unsupported("sum")),
            },
            Role::Min { bytewise } | Role::Max { bytewise } => Acc::Extreme {
                best: None,
                max: matches!(role, Role::Max { .. }),
                bytewise,
            },
        })
    }

    /// Folds in one shard's partial value (`None` = NULL).
    pub(super) fn add(
        &mut self,
        col: &Column,
        value: Option<&Bytes>,
        cx: Context,
    ) -> Result<(), MergeError> {
        if let Acc::First(first) = self {
            if first.is_none() {
                *first = Some(value.cloned());
            }
            return Ok(());
        }
        let Some(value) = value else {
            return Ok(());
        };
        let overflow = MergeError::OutOfRange("bigint");
        match self {
            Acc::First(_) => {}
            Acc::Count(n) => {
                *n = n
                    .checked_add(values::integer(col, value)?)
                    .ok_or(overflow)?
            }
            Acc::SumInt(sum) => {
                let v = values::integer(col, value)?;
                *sum = Some(sum.unwrap_or(0).checked_add(v).ok_or(overflow)?);
            }
            Acc::SumNumeric(sum) => {
                let v = values::numeric(col, value)?;
                *sum = Some(match sum {
                    Some(s) => s.add(&v),
                    None => v,
                });
            }
            Acc::SumFloat { sum, real } => {
                let v = values::float_value(col, value)?;
                let total = match (*sum, *real) {
                    (None, _) => v,
                    (Some(s), true) => f64::from(s as f32 + v as f32),
                    (Some(s), false) => s + v,
                };
                // Postgres' float addition errors where finite inputs overflow.
                let finite_inputs = sum.is_none_or(f64::is_finite) && v.is_finite();
                if total.is_infinite() && finite_inputs {
                    return Err(MergeError::OutOfRange(match real {
                        true => "real",
                        false => "double precision",
                    }));
                }
                *sum = Some(total);
            }
            Acc::Extreme {
                best,
                max,
                bytewise,
            } => {
                let key = values::sort_value(col, value, *bytewise || cx.bytewise_text, "compare")?;
                let better = match best {
                    None => true,
                    Some((_, b)) => {
                        let order = key.cmp(b);
                        (*max && order.is_gt()) || (!*max && order.is_lt())
                    }
                };
                if better {
                    *best = Some((value.clone(), key));
                }
            }
        }
        Ok(())
    }

    /// The group's value of this column, encoded in `col`'s type and format.
    pub(super) fn finish(&self, col: &Column, cx: Context) -> Result<Option<Bytes>, MergeError> {
        let encoded = match self {
            Acc::First(first) => return Ok(first.clone().flatten()),
            Acc::Extreme { best, .. } => return Ok(best.as_ref().map(|(b, _)| b.clone())),
            Acc::Count(n) => Some(values::encode_int8(*n, col.format)),
            Acc::SumInt(sum) => sum.map(|s| values::encode_int8(s, col.format)),
            Acc::SumNumeric(sum) => sum.as_ref().map(|s| values::encode_numeric(s, col.format)),
            Acc::SumFloat { sum, real } => match sum {
                Some(s) => Some(values::encode_float(
                    *s,
                    *real,
                    col.format,
                    cx.shortest_floats,
                )?),
                None => None,
            },
        };
        Ok(encoded.map(Bytes::from))
    }
}

/// The RowDescription field of an avg column, given the field of its shard `sum`.
pub(super) fn avg_column(sum: &Column) -> Result<Column, MergeError> {
    let (type_oid, type_len) = match sum.type_oid {
        oid::INT8 | oid::NUMERIC => (oid::NUMERIC, -1),
        oid::FLOAT8 => (oid::FLOAT8, 8),
        oid::FLOAT4 => return Err(MergeError::AvgOfReal),
        type_oid => {
            return Err(MergeError::UnsupportedType {
                what: "average",
                type_oid,
            })
        }
    };
    Ok(Column {
        type_oid,
        type_len,
        type_mod: -1,
        table_oid: 0,
        attnum: 0,
        ..sum.clone()
    })
}

/// avg from the group's combined sum and count, encoded as `format`.
pub(super) fn avg(
    sum: &Acc,
    count: &Acc,
    format: Format,
    cx: Context,
) -> Result<Option<Bytes>, MergeError> {
    let &Acc::Count(n) = count else {
        return Ok(None);
    };
    let encoded = match sum {
        Acc::SumInt(Some(s)) => {
            Numeric::avg(&Numeric::from_i64(*s), n).map(|a| values::encode_numeric(&a, format))
        }
        Acc::SumNumeric(Some(s)) => Numeric::avg(s, n).map(|a| values::encode_numeric(&a, format)),
        Acc::SumFloat {
            sum: Some(s),
            real: false,
        } if n > 0 => Some(values::encode_float(
            s / n as f64,
            false,
            format,
            cx.shortest_floats,
        )?),
        Acc::SumFloat { real: true, .. } => return Err(MergeError::AvgOfReal),
        _ => None,
    };
    Ok(encoded.map(Bytes::from))
}
