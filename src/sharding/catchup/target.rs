//! Applying decoded changes on a target shard: upsert by primary key, delete by primary key, each
//! value sent as a text literal cast by Postgres to the target column's type, in one transaction
//! per target per batch. Statements are sent many at a time (one simple query per chunk), so a
//! large backlog costs few round trips.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::apply::{qualified, quote_ident};
use super::pgoutput::{Relation, Tuple, Value};
use super::{CatchupError, CatchupTable};

/// One change to make on a target, in the source's commit order.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// Insert or update the row (`UnchangedToast` values keep the target's).
    Upsert {
        table: usize,
        rel: Arc<Relation>,
        values: Vec<Value>,
    },
    /// Delete the row whose primary key the old tuple carries.
    Delete {
        table: usize,
        rel: Arc<Relation>,
        old: Vec<Value>,
    },
}

impl Op {
    pub(super) fn upsert(table: usize, rel: &Arc<Relation>, new: Tuple) -> Op {
        Op::Upsert {
            table,
            rel: Arc::clone(rel),
            values: new.0,
        }
    }

    pub(super) fn delete(table: usize, rel: &Arc<Relation>, old: Tuple) -> Op {
        Op::Delete {
            table,
            rel: Arc::clone(rel),
            old: old.0,
        }
    }
}

/// A table as the target defines it: primary key columns and each column's type name.
struct TargetTable {
    pk: Vec<String>,
    types: HashMap<String, String>,
}

/// Per-round caches of target table descriptions and prepared statements.
pub(super) struct Targets<'t> {
    tables: &'t [CatchupTable],
    described: HashMap<(usize, usize), Arc<TargetTable>>,
    statements: HashMap<(usize, String), Statement>,
    /// Statements not sent yet (the open transaction's next chunk).
    pending: String,
}

/// A chunk is sent once its text passes this size.
const CHUNK_BYTES: usize = 512 * 1024;

/// A text value as a literal that means the same whatever `standard_conforming_strings` says.
fn literal(value: Option<&str>) -> String {
    match value {
        None => "NULL".to_owned(),
        Some(v) => format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''")),
    }
}

type Params = Vec<Option<String>>;

impl<'t> Targets<'t> {
    pub(super) fn new(tables: &'t [CatchupTable]) -> Targets<'t> {
        Targets {
            tables,
            described: HashMap::new(),
            statements: HashMap::new(),
            pending: String::new(),
        }
    }

    /// Applies `ops` on target `index` in one transaction; rolls back on any error.
    pub(super) async fn apply(
        &mut self,
        source: &Client,
        target: &Client,
        index: usize,
        ops: &[Op],
    ) -> Result<(), CatchupError> {
        self.pending.clear();
        target.batch_execute("BEGIN").await?;
        let mut result = Ok(());
        for op in ops {
            result = self.apply_op(source, target, index, op).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self.flush(target).await;
        }
        match result {
            Ok(()) => {
                target.batch_execute("COMMIT").await?;
                Ok(())
            }
            Err(error) => {
                if let Err(rollback) = target.batch_execute("ROLLBACK").await {
                    tracing::warn!(%rollback, "rollback on the target failed");
                }
                Err(error)
            }
        }
    }

    async fn apply_op(
        &mut self,
        source: &Client,
        target: &Client,
        index: usize,
        op: &Op,
    ) -> Result<(), CatchupError> {
        match op {
            Op::Upsert { table, rel, values } => {
                self.upsert(source, target, index, *table, rel, values)
                    .await
            }
            Op::Delete { table, rel, old } => {
                let described = self.describe(target, index, *table).await?;
                let (condition, _) = self.pk_condition(&described, rel, old, true)?;
                let sql = format!(
                    "DELETE FROM {} WHERE {condition}",
                    qualified(&self.tables[*table])
                );
                self.queue(target, sql).await
            }
        }
    }

    async fn upsert(
        &mut self,
        source: &Client,
        target: &Client,
        index: usize,
        table: usize,
        rel: &Relation,
        values: &[Value],
    ) -> Result<(), CatchupError> {
        let described = self.describe(target, index, table).await?;
        let mut values = values.to_vec();
        let unchanged: Vec<usize> = (0..values.len())
            .filter(|&i| values[i] == Value::UnchangedToast)
            .collect();
        if !unchanged.is_empty() {
            // Unchanged TOAST values were not sent: the target's row keeps its own. A row the
            // target lacks takes them from the source's current row; a later change in the stream
            // covers anything newer, and a row gone from the source is left for the stream's
            // later delete to settle.
            let (condition, params) = self.pk_condition(&described, rel, &values, false)?;
            let name = qualified(&self.tables[table]);
            self.flush(target).await?;
            let exists = self
                .query_opt(
                    target,
                    index,
                    format!("SELECT 1 FROM {name} WHERE {condition}"),
                    params.clone(),
                )
                .await?
                .is_some();
            if !exists {
                let columns = unchanged
                    .iter()
                    .map(|&i| format!("{}::text", quote_ident(&rel.columns[i].name)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!("SELECT {columns} FROM {name} WHERE {condition}");
                let statement = source
                    .prepare_typed(&sql, &vec![Type::TEXT; params.len()])
                    .await?;
                let Some(row) = source.query_opt(&statement, &refs(&params)).await? else {
                    return Ok(());
                };
                for (n, &i) in unchanged.iter().enumerate() {
                    let value: Option<String> = row.try_get(n)?;
                    values[i] = value.map_or(Value::Null, |v| Value::Text(v.into_bytes()));
                }
            }
        }
        let table_name = qualified(&self.tables[table]);
        let mut columns = Vec::new();
        let mut casts = Vec::new();
        let mut updates = Vec::new();
        for (column, value) in rel.columns.iter().zip(&values) {
            if *value == Value::UnchangedToast {
                continue;
            }
            let ty = self.column_type(&described, table, &column.name)?;
            let value = text(self.tables, table, value)?;
            casts.push(format!("{}::{ty}", literal(value.as_deref())));
            let quoted = quote_ident(&column.name);
            if !described.pk.contains(&column.name) {
                updates.push(format!("{quoted} = EXCLUDED.{quoted}"));
            }
            columns.push(quoted);
        }
        let pk = described
            .pk
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let action = if updates.is_empty() {
            "NOTHING".to_owned()
        } else {
            format!("UPDATE SET {}", updates.join(", "))
        };
        let sql = format!(
            "INSERT INTO {table_name} ({}) VALUES ({}) ON CONFLICT ({pk}) DO {action}",
            columns.join(", "),
            casts.join(", ")
        );
        self.queue(target, sql).await
    }

    /// `pk1 = $n::type AND ...` over the primary key values found in `values` (by column name).
    fn pk_condition(
        &self,
        described: &TargetTable,
        rel: &Relation,
        values: &[Value],
        literals: bool,
    ) -> Result<(String, Params), CatchupError> {
        let bad = |reason: String| CatchupError::BadChange {
            table: format!("{}.{}", rel.namespace, rel.name),
            reason,
        };
        let mut parts = Vec::new();
        let mut params = Vec::new();
        for pk in &described.pk {
            let position = rel
                .columns
                .iter()
                .position(|c| &c.name == pk)
                .ok_or_else(|| bad(format!("primary key column {pk} is not replicated")))?;
            let value = match values.get(position) {
                Some(Value::Text(bytes)) => String::from_utf8(bytes.clone())
                    .map_err(|_| bad(format!("value of {pk} is not UTF-8")))?,
                _ => {
                    return Err(bad(format!(
                        "the change carries no value for key column {pk}"
                    )))
                }
            };
            let ty = described.types.get(pk).map_or("text", String::as_str);
            let placeholder = if literals {
                literal(Some(&value))
            } else {
                params.push(Some(value));
                format!("${}", params.len())
            };
            parts.push(format!("{} = {placeholder}::{ty}", quote_ident(pk)));
        }
        Ok((parts.join(" AND "), params))
    }

    fn column_type<'d>(
        &self,
        described: &'d TargetTable,
        table: usize,
        column: &str,
    ) -> Result<&'d str, CatchupError> {
        described
            .types
            .get(column)
            .map(String::as_str)
            .ok_or_else(|| CatchupError::BadChange {
                table: qualified(&self.tables[table]),
                reason: format!("column {column} does not exist on the target"),
            })
    }

    async fn describe(
        &mut self,
        target: &Client,
        index: usize,
        table: usize,
    ) -> Result<Arc<TargetTable>, CatchupError> {
        if let Some(described) = self.described.get(&(index, table)) {
            return Ok(Arc::clone(described));
        }
        let name = qualified(&self.tables[table]);
        let rows = target
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                     coalesce(a.attnum = ANY (i.indkey), false) \
                 FROM pg_attribute a \
                 LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&name],
            )
            .await?;
        let mut described = TargetTable {
            pk: Vec::new(),
            types: HashMap::new(),
        };
        for row in rows {
            let column: String = row.try_get(0)?;
            if row.try_get::<_, bool>(2)? {
                described.pk.push(column.clone());
            }
            described.types.insert(column, row.try_get(1)?);
        }
        if described.types.is_empty() {
            return Err(CatchupError::BadChange {
                table: name,
                reason: "the table does not exist on the target".to_owned(),
            });
        }
        if described.pk.is_empty() {
            return Err(CatchupError::BadChange {
                table: name,
                reason: "the table has no primary key on the target".to_owned(),
            });
        }
        let described = Arc::new(described);
        self.described
            .insert((index, table), Arc::clone(&described));
        Ok(described)
    }

    async fn statement(
        &mut self,
        target: &Client,
        index: usize,
        sql: String,
        params: usize,
    ) -> Result<Statement, CatchupError> {
        let key = (index, sql);
        if let Some(statement) = self.statements.get(&key) {
            return Ok(statement.clone());
        }
        let statement = target
            .prepare_typed(&key.1, &vec![Type::TEXT; params])
            .await?;
        self.statements.insert(key, statement.clone());
        Ok(statement)
    }

    /// Adds a statement to the chunk, sending the chunk once it is large.
    async fn queue(&mut self, target: &Client, sql: String) -> Result<(), CatchupError> {
        self.pending.push_str(&sql);
        self.pending.push_str(";\n");
        if self.pending.len() >= CHUNK_BYTES {
            self.flush(target).await?;
        }
        Ok(())
    }

    /// Sends the statements queued so far.
    async fn flush(&mut self, target: &Client) -> Result<(), CatchupError> {
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            target.batch_execute(&chunk).await?;
        }
        Ok(())
    }

    async fn query_opt(
        &mut self,
        target: &Client,
        index: usize,
        sql: String,
        params: Params,
    ) -> Result<Option<tokio_postgres::Row>, CatchupError> {
        let statement = self.statement(target, index, sql, params.len()).await?;
        Ok(target.query_opt(&statement, &refs(&params)).await?)
    }
}

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// A value as a text parameter (`None` is SQL NULL).
fn text(
    tables: &[CatchupTable],
    table: usize,
    value: &Value,
) -> Result<Option<String>, CatchupError> {
    match value {
        Value::Null | Value::UnchangedToast => Ok(None),
        Value::Text(bytes) => {
            String::from_utf8(bytes.clone())
                .map(Some)
                .map_err(|_| CatchupError::BadChange {
                    table: qualified(&tables[table]),
                    reason: "a value is not UTF-8".to_owned(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::literal;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal(None), "NULL");
        assert_eq!(literal(Some("plain")), "E'plain'");
        assert_eq!(literal(Some(r"o'b\n\\")), r"E'o''b\\n\\\\'");
    }
}
