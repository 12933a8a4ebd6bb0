//! The refusals' texts, in one place: each says what was refused, why it cannot be routed
//! correctly, and what to do instead. They reach clients, so they name only what the statement
//! itself names.

use crate::sharding::rules::ShardedTable;

/// `{table}.{column}`.
fn key(t: &ShardedTable) -> String {
    format!("{}.{}", t.table, t.column)
}

pub(super) fn join_not_on_keys(a: &ShardedTable, b: &ShardedTable) -> Box<str> {
    format!(
        "this statement joins {} and {} on something other than their shard keys; rows that match \
         may live on different shards, so no shard can answer it alone; join on the shard keys \
         ({} = {}) or query each shard's tables separately",
        a.table,
        b.table,
        key(a),
        key(b)
    )
    .into()
}

pub(super) fn mixes_unsharded(sharded: &ShardedTable, other: &str) -> Box<str> {
    format!(
        "this statement uses sharded table {} together with table {other}, which is not sharded \
         and lives only on the default shard; rows of {} on other shards would be missed; make \
         {other} a reference table (copied to every shard) or query the two separately",
        sharded.table, sharded.table
    )
    .into()
}

pub(super) fn nested_not_tied(t: &ShardedTable) -> Box<str> {
    format!(
        "a subquery, derived table or WITH clause reads sharded table {} without being pinned to \
         one shard key or tied to the outer query by its shard key; each shard would see only its \
         own rows of {}; add a condition on {} to it, or correlate it with the outer query on {}",
        t.table,
        t.table,
        key(t),
        t.column
    )
    .into()
}

/// A write with no shard key: the hint names the written table's own key column (it used to name
/// `user_id` whatever the table).
pub(super) fn keyless_write(t: &ShardedTable) -> Box<str> {
    format!(
        "this write of sharded table {} has no shard key in its WHERE clause, so it would run on \
         every shard, which sharding.allow_broadcast_writes does not allow; add the shard key \
         (e.g. WHERE {} = …) or enable broadcast writes",
        t.table, t.column
    )
    .into()
}

pub(super) fn set_operation(t: &ShardedTable) -> Box<str> {
    format!(
        "INTERSECT or EXCEPT over sharded table {} needs the rows of every shard at once; pin the \
         query to one shard key ({} = …) or run it per shard and combine the results in the \
         application",
        t.table,
        key(t)
    )
    .into()
}

pub(super) fn update_moves_key(t: &ShardedTable) -> Box<str> {
    format!(
        "UPDATE of the shard key {} is refused: a new key may belong to another shard, and rows \
         are not moved between shards; delete the row and insert it again with the new key",
        key(t)
    )
    .into()
}

pub(super) fn write_reference(table: &str) -> Box<str> {
    format!(
        "this write to reference table {table} is refused: its copies must stay identical on \
         every shard, so pgscale applies only a plain INSERT, UPDATE or DELETE (sent on its own, \
         outside a transaction, reading no sharded or unsharded table) to every copy at once; \
         rewrite it that way, or apply it to every shard directly"
    )
    .into()
}

pub(super) fn insert_select(t: &ShardedTable) -> Box<str> {
    format!(
        "INSERT … SELECT into sharded table {} is refused: the selected rows may belong to other \
         shards; insert rows with VALUES (…) giving {} as a value, or use COPY {} ({}, …) FROM STDIN",
        t.table, t.column, t.table, t.column
    )
    .into()
}

pub(super) fn insert_needs_columns(t: &ShardedTable) -> Box<str> {
    format!(
        "INSERT into sharded table {} needs a column list naming its shard key, as in INSERT INTO \
         {} ({}, …) VALUES (…): pgscale does not know the table's column order",
        t.table, t.table, t.column
    )
    .into()
}

pub(super) fn insert_missing_key(t: &ShardedTable) -> Box<str> {
    format!(
        "INSERT into sharded table {} must give its shard key {}: without it the row's shard \
         cannot be chosen",
        t.table, t.column
    )
    .into()
}

pub(super) fn insert_default_key(t: &ShardedTable) -> Box<str> {
    format!(
        "INSERT into sharded table {} with a default shard key {} is refused: a default is \
         computed on a server, after the shard has to be chosen; generate the key in the \
         application and insert it as a value",
        t.table, t.column
    )
    .into()
}

pub(super) fn insert_key_expression(t: &ShardedTable) -> Box<str> {
    format!(
        "INSERT into sharded table {} computes its shard key {} with an expression; pgscale routes \
         by the key's value, so give it as a literal or a $n parameter",
        t.table, t.column
    )
    .into()
}

pub(super) fn insert_rows_with_more(t: &ShardedTable) -> Box<str> {
    format!(
        "a multi-row INSERT into sharded table {} inside a WITH clause, or reading sharded tables, \
         cannot be split by shard; insert the rows in a statement of their own",
        t.table
    )
    .into()
}

pub(super) fn create_as(table: &str) -> Box<str> {
    format!(
        "creating a table from a query (CREATE TABLE … AS, SELECT … INTO) is refused here: it \
         involves sharded or reference table {table}, and the new table would hold one shard's \
         rows; create the table, then load it with INSERT … VALUES or COPY … FROM STDIN"
    )
    .into()
}

pub(super) fn view_over_sharded(t: &ShardedTable) -> Box<str> {
    format!(
        "a view over sharded table {} is refused: pgscale routes reads of the view to the default \
         shard, which holds only some rows of {}; query {} directly",
        t.table, t.table, t.table
    )
    .into()
}

pub(super) fn copy_needs_columns(t: &ShardedTable) -> Box<str> {
    format!(
        "COPY {} FROM STDIN needs a column list that includes the shard key, as in COPY {} ({}, …) \
         FROM STDIN: pgscale does not know the table's column order",
        t.table, t.table, t.column
    )
    .into()
}

pub(super) fn copy_missing_key(t: &ShardedTable) -> Box<str> {
    format!(
        "COPY {} FROM STDIN must include the shard key {} in its column list: each row goes to the \
         shard of its key",
        t.table, t.column
    )
    .into()
}

pub(super) fn copy_server_side(t: &ShardedTable) -> Box<str> {
    format!(
        "COPY of sharded table {} from or to a server file or program is refused: the file would be \
         read or written on one server; use COPY … FROM STDIN or TO STDOUT",
        t.table
    )
    .into()
}

pub(super) fn copy_out(t: &ShardedTable) -> Box<str> {
    format!(
        "COPY … TO of sharded table {} reading more than one shard is refused: one COPY stream \
         cannot be merged from several shards; use COPY (SELECT … WHERE {} = …) TO STDOUT for one \
         key, or run the COPY against each shard",
        t.table,
        key(t)
    )
    .into()
}

pub(super) const EXPLAIN_MANY: &str = "EXPLAIN of a statement that runs on several shards is \
     refused: each shard has its own plan; pin the statement to one shard key, or EXPLAIN it on a \
     shard directly";

pub(super) const PREPARE: &str = "PREPARE of a statement over sharded tables is refused: pgscale \
     routes each execution by its key; use the extended protocol (Parse/Bind, what drivers do for \
     parameters) instead of PREPARE/EXECUTE";

pub(super) const CURSOR: &str = "cursors over sharded tables are refused: a cursor's rows would \
     come from several shards, or its FETCHes would have to follow one shard; page with \
     LIMIT and a condition on the last row seen instead";

pub(super) fn lock(table: &str) -> Box<str> {
    format!(
        "LOCK TABLE {table} is refused: {table} is sharded or a reference table, and a lock on \
         every shard is not taken atomically; lock rows with SELECT … FOR UPDATE by shard key, or \
         lock each shard directly"
    )
    .into()
}

pub(super) fn merge(table: &str) -> Box<str> {
    format!(
        "MERGE involving sharded or reference table {table} is refused; use INSERT … ON CONFLICT \
         with VALUES, or UPDATE and DELETE by shard key"
    )
    .into()
}

pub(super) fn cannot_follow(table: &str, what: &str) -> Box<str> {
    format!(
        "pgscale cannot tell which shards this statement touches ({what}), and it involves {table}, \
         which is sharded or a reference table; rewrite it, or run it against each shard directly"
    )
    .into()
}

pub(super) const UNPARSABLE: &str = "pgscale could not parse this statement, so it cannot tell \
     which shards it touches; rewrite it, or run it against each shard directly";
