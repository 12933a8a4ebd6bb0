//! Hidden queries that return rows (health polls, catalog loading): a simple query whose small result
//! comes back as text.

use super::server::{ServerConn, ServerError};
use crate::protocol::codec::BodyReader;

/// A result row: each column's text, None for NULL.
pub type Row = Vec<Option<String>>;

/// Runs a simple query on `conn` and returns its rows as text (None = NULL). Meant for small results:
/// every row is kept. An `ErrorResponse` becomes [`ServerError::Refused`] (the connection stays
/// usable: the server's `ReadyForQuery` was read); any other error leaves the connection in an unknown
/// state, so drop it. Text that is not UTF-8 (a `SQL_ASCII` database) is decoded lossily.
pub async fn query_rows(conn: &mut ServerConn, sql: &str) -> Result<Vec<Row>, ServerError> {
    Ok(conn.run_simple(sql, true).await?.rows)
}

/// A `DataRow` body: an i16 column count, then per column an i32 length (-1 = NULL) and the bytes.
pub(super) fn parse_data_row(body: &[u8]) -> Result<Row, &'static str> {
    let mut r = BodyReader::new(body);
    let count = r.i16().map_err(|_| "short DataRow")?;
    let count = usize::try_from(count).map_err(|_| "negative DataRow column count")?;
    let mut row = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.i32().map_err(|_| "short DataRow")?;
        if len == -1 {
            row.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| "bad DataRow column length")?;
        let bytes = r.bytes(len).map_err(|_| "DataRow column past its end")?;
        row.push(Some(String::from_utf8_lossy(bytes).into_owned()));
    }
    if !r.remaining().is_empty() {
        return Err("DataRow longer than its columns");
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pool::fake_server::{row, FakeServer, Reply};
    use crate::pool::server::ConnectSpec;

    #[test]
    fn parses_data_rows() {
        let body = b"\x00\x03\x00\x00\x00\x02ab\xff\xff\xff\xff\x00\x00\x00\x00";
        assert_eq!(
            parse_data_row(body),
            Ok(vec![Some("ab".into()), None, Some(String::new())])
        );
        assert_eq!(parse_data_row(b"\x00\x00"), Ok(vec![]));
    }

    #[test]
    fn refuses_malformed_data_rows() {
        for bad in [
            &b""[..],
            b"\x00",
            b"\xff\xff",                   // negative count
            b"\x00\x01\x00\x00\x00\x05ab", // column past the end
            b"\x00\x01\xff\xff\xff\xfe",   // length -2
            b"\x00\x01\x00\x00\x00\x01ab", // trailing byte
            b"\x00\x02\x00\x00\x00\x01a",  // missing column
        ] {
            assert!(parse_data_row(bad).is_err(), "{bad:?}");
        }
    }

    fn spec(server: &FakeServer) -> ConnectSpec {
        ConnectSpec {
            addr: server.addr.clone(),
            user: "u".into(),
            password: None,
            database: "d".into(),
            timeout: Duration::from_secs(5),
            application_name: None,
        }
    }

    #[tokio::test]
    async fn returns_rows_and_errors() {
        let server = FakeServer::start(|sql| match sql {
            "select rows" => {
                Reply::Rows(vec![row(&[Some("1"), None]), row(&[Some("x"), Some("")])])
            }
            "select none" => Reply::Rows(vec![]),
            _ => Reply::Error("42883", "function does not exist"),
        })
        .await;
        let mut conn = ServerConn::connect(&spec(&server)).await.expect("connect");
        let rows = query_rows(&mut conn, "select rows").await.expect("rows");
        assert_eq!(
            rows,
            vec![
                vec![Some("1".to_string()), None],
                vec![Some("x".to_string()), Some(String::new())]
            ]
        );
        match query_rows(&mut conn, "select nope()").await {
            Err(ServerError::Refused { code, .. }) => assert_eq!(code, "42883"),
            other => panic!("expected Refused, got {:?}", other.map(|r| r.len())),
        }
        // Still usable after an error.
        assert_eq!(
            query_rows(&mut conn, "select none").await.expect("rows"),
            Vec::<Row>::new()
        );
    }

    #[tokio::test]
    async fn a_vanishing_server_is_an_error() {
        let server = FakeServer::start(|_| Reply::Close).await;
        let mut conn = ServerConn::connect(&spec(&server)).await.expect("connect");
        let result = query_rows(&mut conn, "select 1").await;
        assert!(matches!(
            result,
            Err(ServerError::Closed { .. } | ServerError::Io { .. })
        ));
    }
}
