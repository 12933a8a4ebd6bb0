//! A tiny hand-driven protocol client for tests that need what drivers hide: `BackendKeyData`,
//! `ParameterStatus`, malformed packets.

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
