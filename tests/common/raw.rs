//! A tiny hand-driven protocol client for tests that need what drivers hide: `BackendKeyData`,
//! `ParameterStatus`, malformed packets, and message sequences drivers never send.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawClient {
    pub stream: TcpStream,
    /// `NotificationResponse`s seen so far: (sender pid, channel, payload).
    pub notifications: Vec<(i32, String, String)>,
    pub params: HashMap<String, String>,
    pub pid: i32,
    pub secret: i32,
}

/// A message as (tag, body).
pub type Msg = (u8, Vec<u8>);

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for (n, v) in params {
        body.extend_from_slice(n.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn query_frame(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frame(b'Q', &body)
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// `Parse` of `sql` as statement `name` ("" = unnamed), parameter types left to the server.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, sql);
    body.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &body)
}

/// `Bind` of statement `stmt` to `portal` with text parameters and text results.
pub fn bind(portal: &str, stmt: &str, params: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    cstr(&mut body, stmt);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        body.extend_from_slice(&(p.len() as i32).to_be_bytes());
        body.extend_from_slice(p.as_bytes());
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    frame(b'B', &body)
}

/// `Execute` of the unnamed portal, all rows.
pub fn execute() -> Vec<u8> {
    frame(b'E', b"\0\0\0\0\0")
}

pub fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

pub fn flush() -> Vec<u8> {
    frame(b'H', b"")
}

/// `Describe` of a statement (`kind` b'S') or portal (b'P').
pub fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    cstr(&mut body, name);
    frame(b'D', &body)
}

/// `Close` of a statement (`kind` b'S') or portal (b'P').
pub fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    cstr(&mut body, name);
    frame(b'C', &body)
}

/// `FunctionCall` of the function `oid` without arguments, text result.
pub fn function_call(oid: u32) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&[0u8; 6]);
    frame(b'F', &body)
}

/// The text fields of a `DataRow` body, joined by `,` (`NULL` for null).
fn data_row_text(body: &[u8]) -> String {
    let mut fields = Vec::new();
    let mut at = 2;
    while at + 4 <= body.len() {
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            fields.push("NULL".to_string());
            continue;
        }
        let end = (at + len as usize).min(body.len());
        fields.push(String::from_utf8_lossy(&body[at..end]).into_owned());
        at = end;
    }
    fields.join(",")
}

/// A message in a trace: its tag, with the detail tests compare (`Z(T)`, `E(0A000)`,
/// `C(INSERT 0 1)`, `D(1,alice)`).
fn trace_item(tag: u8, body: &[u8]) -> String {
    let detail = match tag {
        b'Z' => body.first().map(|s| (*s as char).to_string()),
        b'E' => Some(error_code(body)),
        b'C' => Some(String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into_owned()),
        b'D' => Some(data_row_text(body)),
        _ => None,
    };
    match detail {
        Some(detail) => format!("{}({detail})", tag as char),
        None => (tag as char).to_string(),
    }
}

/// Reads one message, or `None` on EOF / timeout.
pub async fn read_msg(stream: &mut TcpStream) -> Option<Msg> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.ok()?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.checked_sub(4)?];
        stream.read_exact(&mut body).await.ok()?;
        Some((header[0], body))
    })
    .await
    .ok()
    .flatten()
}

/// The SQLSTATE in an ErrorResponse body.
pub fn error_code(body: &[u8]) -> String {
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let field = body[i];
        let end = body[i + 1..]
            .iter()
            .position(|b| *b == 0)
            .map_or(body.len(), |p| i + 1 + p);
        if field == b'C' {
            return String::from_utf8_lossy(&body[i + 1..end]).into_owned();
        }
        i = end + 1;
    }
    String::new()
}

impl RawClient {
    /// Logs in as a trust-auth user with the given extra startup parameters.
    pub async fn connect(port: u16, params: &[(&str, &str)]) -> Result<RawClient, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(&startup_packet(params))
            .await
            .map_err(|e| e.to_string())?;
        let mut client = RawClient {
            stream,
            notifications: Vec::new(),
            params: HashMap::new(),
            pid: 0,
            secret: 0,
        };
        loop {
            let (tag, body) = read_msg(&mut client.stream)
                .await
                .ok_or("closed during startup")?;
            match tag {
                b'R' if body[..4] != [0, 0, 0, 0] => {
                    return Err("raw client only supports trust".into());
                }
                b'R' => {}
                b'S' => {
                    let parts: Vec<&[u8]> = body.split(|b| *b == 0).collect();
                    client.params.insert(
                        String::from_utf8_lossy(parts[0]).into_owned(),
                        String::from_utf8_lossy(parts[1]).into_owned(),
                    );
                }
                b'K' => {
                    client.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    client.secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'Z' => return Ok(client),
                b'E' => return Err(format!("error {}", error_code(&body))),
                _ => {}
            }
        }
    }

    /// Sends `frames` as they are.
    pub async fn send(&mut self, frames: &[u8]) {
        self.stream
            .write_all(frames)
            .await
            .expect("send to the proxy");
    }

    /// Reads messages up to and including the first tagged `stop` and returns them as a trace,
    /// e.g. `1 2 D(42) C(SELECT 1) Z(I)` (see [`trace_item`]); notices and parameter statuses are
    /// left out. A read that times out or hits EOF ends the trace with `<TIMEOUT/EOF>`.
    pub async fn trace_until(&mut self, stop: u8) -> String {
        let mut trace = Vec::new();
        loop {
            let Some((tag, body)) = read_msg(&mut self.stream).await else {
                trace.push("<TIMEOUT/EOF>".to_string());
                return trace.join(" ");
            };
            if matches!(tag, b'N' | b'S') {
                continue;
            }
            trace.push(trace_item(tag, &body));
            if tag == stop {
                return trace.join(" ");
            }
        }
    }

    /// Sends `frames` and traces the answer up to and including `ReadyForQuery`.
    pub async fn round_trip(&mut self, frames: &[u8]) -> String {
        self.send(frames).await;
        self.trace_until(b'Z').await
    }

    /// Runs a simple query; returns the first column of each row, or the error's SQLSTATE.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<String>, String> {
        self.stream
            .write_all(&query_frame(sql))
            .await
            .map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = read_msg(&mut self.stream)
                .await
                .ok_or("connection closed")?;
            match tag {
                b'D' => {
                    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                    if len >= 0 {
                        rows.push(String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned());
                    } else {
                        rows.push("NULL".into());
                    }
                }
                b'S' => {
                    let parts: Vec<&[u8]> = body.split(|b| *b == 0).collect();
                    self.params.insert(
                        String::from_utf8_lossy(parts[0]).into_owned(),
                        String::from_utf8_lossy(parts[1]).into_owned(),
                    );
                }
                b'A' => {
                    let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let parts: Vec<&[u8]> = body[4..].split(|b| *b == 0).collect();
                    self.notifications.push((
                        pid,
                        String::from_utf8_lossy(parts[0]).into_owned(),
                        String::from_utf8_lossy(parts[1]).into_owned(),
                    ));
                }
                b'E' => error = Some(error_code(&body)),
                b'Z' => return error.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }
}
