//! Clients whose `client_encoding` is not UTF-8 (LATIN1): their SQL and names are bytes that are not
//! valid UTF-8, and must reach Postgres unchanged, as on a direct connection.

mod common;

use common::raw::{self, read_msg, RawClient};
use common::{within, Env};
use pgscale::config::PoolMode;
use pgscale::demo::{SAMPLE_SCHEMA, SAMPLE_SHARDING};

/// 'é' and 'è' in Latin-1 (not valid UTF-8 on their own).
const E_ACUTE: u8 = 0xE9;
const E_GRAVE: u8 = 0xE8;

fn cstr(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.push(0);
}

fn query(sql: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, sql);
    raw::frame(b'Q', &body)
}

fn parse(name: &[u8], sql: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, sql);
    body.extend_from_slice(&0i16.to_be_bytes());
    raw::frame(b'P', &body)
}

fn bind(statement: &[u8], params: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0];
    cstr(&mut body, statement);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        body.extend_from_slice(&(p.len() as i32).to_be_bytes());
        body.extend_from_slice(p);
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    raw::frame(b'B', &body)
}

/// Sends `frames` and collects the answer up to `ReadyForQuery`: the first column of each row as
/// bytes, or the first error's SQLSTATE. A closed connection or a timeout panics.
async fn rows_of(client: &mut RawClient, frames: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    client.send(frames).await;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let (tag, body) = read_msg(&mut client.stream)
            .await
            .expect("an answer, not a closed connection");
        match tag {
            b'D' => {
                let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                rows.push(body[6..6 + len.max(0) as usize].to_vec());
            }
            b'E' if error.is_none() => error = Some(raw::error_code(&body)),
            b'Z' => return error.map_or(Ok(rows), Err),
            _ => {}
        }
    }
}

async fn latin1_client(env: &Env) -> RawClient {
    let client = RawClient::connect(
        env.port,
        &[
            ("user", "trustuser"),
            ("database", "app"),
            ("client_encoding", "LATIN1"),
        ],
    )
    .await
    .expect("login");
    assert_eq!(
        client.params.get("client_encoding").map(String::as_str),
        Some("LATIN1")
    );
    client
}

/// A simple query and a prepared statement whose texts hold Latin-1 bytes, answered in Latin-1.
async fn latin1_reads_answer(client: &mut RawClient) {
    let mut sql = b"select '".to_vec();
    sql.push(E_ACUTE);
    sql.extend_from_slice(b"'::text");
    let rows = within("simple query", rows_of(client, &query(&sql)))
        .await
        .expect("a Latin-1 query runs");
    assert_eq!(rows, vec![vec![E_ACUTE]]);
    let mut frames = parse(b"", &sql);
    frames.extend(bind(b"", &[]));
    frames.extend(raw::execute());
    frames.extend(raw::sync());
    let rows = within("extended query", rows_of(client, &frames))
        .await
        .expect("a Latin-1 statement runs");
    assert_eq!(rows, vec![vec![E_ACUTE]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_query_text_and_names_reach_postgres_unchanged() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let direct = env.direct().await;
    direct
        .batch_execute("create table lat (v text); grant all on lat to trustuser")
        .await
        .expect("setup");
    let mut client = within("login", latin1_client(&env)).await;
    latin1_reads_answer(&mut client).await;

    // A Latin-1 literal in a simple query, a Latin-1 parameter and a Latin-1 statement name.
    let mut insert = b"insert into lat values ('".to_vec();
    insert.push(E_ACUTE);
    insert.extend_from_slice(b"')");
    within("insert", rows_of(&mut client, &query(&insert)))
        .await
        .expect("insert");
    let name = [b's', E_GRAVE];
    let mut frames = parse(&name, b"insert into lat values ($1)");
    frames.extend(bind(&name, &[&[E_GRAVE]]));
    frames.extend(raw::execute());
    frames.extend(raw::sync());
    within("prepared insert", rows_of(&mut client, &frames))
        .await
        .expect("prepared insert");
    let mut select = b"select v from lat where v in ('".to_vec();
    select.push(E_ACUTE);
    select.extend_from_slice(b"', $1) order by v = '");
    select.push(E_ACUTE);
    select.extend_from_slice(b"'");
    let mut frames = parse(b"sel", &select);
    frames.extend(bind(b"sel", &[&[E_GRAVE]]));
    frames.extend(raw::execute());
    frames.extend(raw::sync());
    let rows = within("prepared select", rows_of(&mut client, &frames))
        .await
        .expect("prepared select");
    assert_eq!(rows, vec![vec![E_GRAVE], vec![E_ACUTE]]);
    // The named statement again, on whatever server connection comes next.
    let mut frames = bind(&name, &[&[E_ACUTE]]);
    frames.extend(raw::execute());
    frames.extend(raw::sync());
    within("bind again", rows_of(&mut client, &frames))
        .await
        .expect("bind of a Latin-1 statement name");

    // The name in use: Postgres' 42P05, naming the client's own (Latin-1) name.
    let mut frames = parse(&name, b"select 1");
    frames.extend(raw::sync());
    client.send(&frames).await;
    let (tag, body) = within("error", read_msg(&mut client.stream))
        .await
        .expect("an answer");
    assert_eq!(tag, b'E');
    assert_eq!(raw::error_code(&body), "42P05");
    assert!(
        body.windows(4).any(|w| w == [b'"', b's', E_GRAVE, b'"']),
        "the error names the client's statement: {}",
        String::from_utf8_lossy(&body)
    );
    within("ready", rows_of(&mut client, &[]))
        .await
        .expect("ready");

    // Stored as Postgres would store them from a direct connection: proper characters.
    let stored: Vec<String> = direct
        .query("select v from lat order by v = 'é', v", &[])
        .await
        .expect("read back")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, ["è", "é", "é"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_reads_are_answered_with_replicas() {
    let env = Env::start_with_replicas(1, |_| {}, PoolMode::Transaction, 2).await;
    let mut client = within("login", latin1_client(&env)).await;
    latin1_reads_answer(&mut client).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_text_in_sharded_mode_runs_or_is_refused_clearly() {
    let env = Env::start_with_shards(2, 0, SAMPLE_SHARDING, |_| {}).await;
    env.exec_on_all_shards(SAMPLE_SCHEMA).await;
    env.exec_on_all_shards("GRANT ALL ON users, pitches TO trustuser")
        .await;
    let mut client = within("login", latin1_client(&env)).await;
    // No sharded table: runs (on the default shard).
    latin1_reads_answer(&mut client).await;
    // A sharded table: its shard key cannot be read from text the proxy cannot decode.
    let mut sql = b"select id from users where id = 1 and name = '".to_vec();
    sql.push(E_ACUTE);
    sql.extend_from_slice(b"'");
    let error = within("sharded", rows_of(&mut client, &query(&sql)))
        .await
        .expect_err("refused");
    assert_eq!(error, "0A000");
    // The session goes on.
    latin1_reads_answer(&mut client).await;
    env.stop().await;
}
