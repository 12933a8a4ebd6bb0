//! The tables a reshard moves, as the servers define them (columns, primary key), and the SQL
//! that reads them in primary-key batches and writes or deletes rows by primary key.
//!
//! Rows travel as `to_jsonb(row)` text: columns are matched by name (a target whose columns are in
//! another order still gets the right values), every type has a text form, and the same text is
//! what `verify` checksums.

use tokio_postgres::Client;

use super::{on_shard, ReshardError};
use crate::sharding::catchup::CatchupTable;
use crate::sharding::{hash_key, KeyType, ShardKey};

/// A table on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The name as the config writes it (`users`, `public.users`): what progress and output use.
    pub config_name: String,
    pub schema: String,
    pub name: String,
    /// Columns a row is written with (generated columns are left to the server).
    pub columns: Vec<String>,
    /// Primary-key columns in key order, with their types as `format_type` spells them.
    pub pk: Vec<(String, String)>,
    /// The shard key column and type; None for a reference table.
    pub key: Option<(String, KeyType)>,
}

/// A row read from a source: its key's text, its primary key's text values, its `to_jsonb` text.
#[derive(Debug, Clone)]
pub struct ScannedRow {
    pub key: Option<String>,
    pub pk: Vec<String>,
    pub json: String,
}

/// `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl TableInfo {
    /// Reads `config_name`'s definition on `shard`; errors clearly when it is missing, has no
    /// primary key, or (sharded) its primary key lacks the key column.
    pub async fn load(
        client: &Client,
        shard: &str,
        database: &str,
        config_name: &str,
        key: Option<(String, KeyType)>,
    ) -> Result<TableInfo, ReshardError> {
        let found = client
            .query_opt(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
                &[&config_name],
            )
            .await
            .map_err(on_shard(shard, "looking up a table"))?;
        let Some(found) = found else {
            return Err(ReshardError::MissingTable {
                table: config_name.to_string(),
                shard: shard.to_string(),
                database: database.to_string(),
            });
        };
        let (schema, name): (String, String) = (found.get(0), found.get(1));
        let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
        let columns = client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass \
                 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                &[&qualified],
            )
            .await
            .map_err(on_shard(shard, "reading a table's columns"))?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let pk: Vec<(String, String)> = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_index i \
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = $1::text::regclass AND i.indisprimary ORDER BY k.ord",
                &[&qualified],
            )
            .await
            .map_err(on_shard(shard, "reading a table's primary key"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if pk.is_empty() {
            return Err(ReshardError::NoPrimaryKey {
                table: config_name.to_string(),
                shard: shard.to_string(),
            });
        }
        if let Some((column, _)) = &key {
            if !pk.iter().any(|(c, _)| c == column) {
                return Err(ReshardError::KeyNotInPrimaryKey {
                    table: config_name.to_string(),
                    shard: shard.to_string(),
                    pk: pk_names(&pk),
                    column: column.clone(),
                });
            }
        }
        Ok(TableInfo {
            config_name: config_name.to_string(),
            schema,
            name,
            columns,
            pk,
            key,
        })
    }

    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The primary key's column names, comma-separated, for messages.
    pub fn pk_names(&self) -> String {
        pk_names(&self.pk)
    }

    /// What the catch-up needs of a sharded table (None for a reference table).
    pub fn catchup_table(&self) -> Option<CatchupTable> {
        self.key.as_ref().map(|(column, key_type)| CatchupTable {
            schema: self.schema.clone(),
            name: self.name.clone(),
            key_column: column.clone(),
            key_type: *key_type,
        })
    }

    /// The next batch after primary key `after` (text values), in primary-key order.
    pub fn select_batch_sql(&self, after: bool, limit: usize) -> String {
        let key = match &self.key {
            Some((column, _)) => format!("t.{}::text", quote_ident(column)),
            None => "NULL::text".to_string(),
        };
        let pk_cols: Vec<String> = self
            .pk
            .iter()
            .map(|(c, _)| format!("t.{}", quote_ident(c)))
            .collect();
        let pk_text: Vec<String> = pk_cols.iter().map(|c| format!("{c}::text")).collect();
        let filter = if after {
            let params: Vec<String> = self
                .pk
                .iter()
                .enumerate()
                .map(|(i, (_, ty))| format!("($1::text[])[{}]::{ty}", i + 1))
                .collect();
            format!(" WHERE ({}) > ({})", pk_cols.join(", "), params.join(", "))
        } else {
            String::new()
        };
        format!(
            "SELECT {key}, ARRAY[{}], to_jsonb(t)::text FROM {} t{filter} ORDER BY {} LIMIT {limit}",
            pk_text.join(", "),
            self.qualified(),
            pk_cols.join(", ")
        )
    }

    /// Upserts a JSON array of rows (`$1`, text) by primary key.
    pub fn upsert_sql(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| quote_ident(c)).collect();
        let pk: Vec<String> = self.pk.iter().map(|(c, _)| quote_ident(c)).collect();
        let updates: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.pk.iter().any(|(p, _)| p == *c))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect();
        let action = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        format!(
            "INSERT INTO {q} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{q}, $1::text::jsonb) \
             ON CONFLICT ({pk}) {action}",
            q = self.qualified(),
            cols = cols.join(", "),
            pk = pk.join(", "),
        )
    }

    /// Deletes the rows of a JSON array (`$1`, text) by primary key.
    pub fn delete_sql(&self) -> String {
        let matches: Vec<String> = self
            .pk
            .iter()
            .map(|(c, _)| format!("t.{0} = d.{0}", quote_ident(c)))
            .collect();
        format!(
            "DELETE FROM {q} t USING jsonb_populate_recordset(NULL::{q}, $1::text::jsonb) d WHERE {}",
            matches.join(" AND "),
            q = self.qualified(),
        )
    }

    /// Reads one batch of up to `limit` rows after `after` (None: from the start).
    pub async fn scan_batch(
        &self,
        client: &Client,
        shard: &str,
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<ScannedRow>, ReshardError> {
        let sql = self.select_batch_sql(after.is_some(), limit);
        let rows = match after {
            Some(after) => client.query(&sql, &[&after]).await,
            None => client.query(&sql, &[]).await,
        }
        .map_err(on_shard(shard, &format!("reading {}", self.config_name)))?;
        Ok(rows
            .iter()
            .map(|r| ScannedRow {
                key: r.get(0),
                pk: r.get(1),
                json: r.get(2),
            })
            .collect())
    }

    /// The rows whose primary keys (text values, in key order) are in `pks`; absent ones are
    /// simply not returned. `verify` re-reads the rows it found different this way.
    pub async fn rows_by_pk(
        &self,
        client: &Client,
        shard: &str,
        pks: &[Vec<String>],
    ) -> Result<Vec<ScannedRow>, ReshardError> {
        let key = match &self.key {
            Some((column, _)) => format!("t.{}::text", quote_ident(column)),
            None => "NULL::text".to_string(),
        };
        let pk_text: Vec<String> = self
            .pk
            .iter()
            .map(|(c, _)| format!("t.{}::text", quote_ident(c)))
            .collect();
        let params: Vec<String> = (1..=self.pk.len())
            .map(|i| format!("${i}::text[]"))
            .collect();
        let names: Vec<String> = (1..=self.pk.len()).map(|i| format!("c{i}")).collect();
        let on: Vec<String> = self
            .pk
            .iter()
            .enumerate()
            .map(|(i, (c, ty))| format!("t.{} = d.c{}::{ty}", quote_ident(c), i + 1))
            .collect();
        let sql = format!(
            "SELECT {key}, ARRAY[{}], to_jsonb(t)::text FROM {} t \
             JOIN unnest({}) AS d({}) ON {}",
            pk_text.join(", "),
            self.qualified(),
            params.join(", "),
            names.join(", "),
            on.join(" AND ")
        );
        let mut out = Vec::new();
        for chunk in pks.chunks(1000) {
            let columns: Vec<Vec<&str>> = (0..self.pk.len())
                .map(|i| {
                    chunk
                        .iter()
                        .map(|pk| pk.get(i).map_or("", String::as_str))
                        .collect()
                })
                .collect();
            let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
                .iter()
                .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let rows = client.query(&sql, &args).await.map_err(on_shard(
                shard,
                &format!("re-reading rows of {}", self.config_name),
            ))?;
            out.extend(rows.iter().map(|r| ScannedRow {
                key: r.get(0),
                pk: r.get(1),
                json: r.get(2),
            }));
        }
        Ok(out)
    }

    /// The ring hash of a scanned row's key, as the proxy computes it.
    pub fn key_hash(&self, shard: &str, row: &ScannedRow) -> Result<u64, ReshardError> {
        let (Some((_, key_type)), Some(text)) = (&self.key, &row.key) else {
            return Ok(0);
        };
        ShardKey::from_text(*key_type, text.as_bytes())
            .map(|key| hash_key(&key))
            .map_err(|reason| ReshardError::BadKey {
                table: self.config_name.clone(),
                shard: shard.to_string(),
                key: text.clone(),
                key_type: *key_type,
                reason,
            })
    }
}

fn pk_names(pk: &[(String, String)]) -> String {
    pk.iter()
        .map(|(c, _)| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows' JSON texts as one JSON array text.
pub fn json_array<'a>(rows: impl Iterator<Item = &'a ScannedRow>) -> String {
    let mut out = String::from("[");
    for (i, row) in rows.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&row.json);
    }
    out.push(']');
    out
}

/// The sharded tables (config name, key column and type) and the reference tables of a config.
pub fn configured_tables(
    config: &crate::config::Config,
) -> Vec<(String, Option<(String, KeyType)>)> {
    let mut out: Vec<(String, Option<(String, KeyType)>)> = config
        .sharding
        .tables
        .iter()
        .map(|t| {
            let key_type: KeyType = t.key_type(&config.sharding).into();
            (t.name.clone(), Some((t.column.to_lowercase(), key_type)))
        })
        .collect();
    out.extend(
        config
            .sharding
            .reference_tables
            .iter()
            .map(|r| (r.clone(), None)),
    );
    out
}

/// Loads every configured table on one shard.
pub async fn load_all(
    client: &Client,
    shard: &str,
    database: &str,
    config: &crate::config::Config,
) -> Result<Vec<TableInfo>, ReshardError> {
    let mut out = Vec::new();
    for (name, key) in configured_tables(config) {
        out.push(TableInfo::load(client, shard, database, &name, key).await?);
    }
    Ok(out)
}
