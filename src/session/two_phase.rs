//! The second phase of a two-phase commit across shards (split INSERTs and COPYs): every shard that
//! prepared the transaction commits it, or every shard rolls back — and whatever could not be
//! finished is named to the client with the command that finishes it, never hidden.

use std::sync::Arc;

use crate::pool::server::ServerError;
use crate::pool::{Pool, PooledConn};

/// One shard's part in a two-phase write.
pub(super) struct Participant {
    pub shard: usize,
    /// The shard's primary pool (for a fresh connection when `conn` broke).
    pub pool: Arc<Pool>,
    /// The connection that ran phase one; None when it broke (the outcome on that shard is unknown).
    pub conn: Option<PooledConn>,
    /// `PREPARE TRANSACTION` succeeded.
    pub prepared: bool,
    /// Whatever happened, the connection is idle and clean (else it is closed at the end).
    pub clean: bool,
}

/// The outcome of phase two.
pub(super) struct Finished {
    /// Shards whose prepared transaction could not be finished, with the error.
    pub unresolved: Vec<(usize, String)>,
}

impl Finished {
    /// A sentence for the client naming each unfinished shard and what finishes it.
    pub fn describe(&self, gid: &str, commit: bool) -> Option<String> {
        if self.unresolved.is_empty() {
            return None;
        }
        let verb = if commit { "COMMIT" } else { "ROLLBACK" };
        let shards: Vec<String> = self
            .unresolved
            .iter()
            .map(|(shard, error)| format!("shard {shard} ({error})"))
            .collect();
        Some(format!(
            "{verb} PREPARED '{gid}' failed on {}; that prepared transaction holds its rows and \
             locks until someone runs {verb} PREPARED '{gid}' there",
            shards.join(", ")
        ))
    }
}

/// Commits (or rolls back) every participant. Participants that never prepared are rolled back;
/// one whose connection broke gets `ROLLBACK PREPARED` on a fresh connection when rolling back
/// (it may have prepared before breaking).
pub(super) async fn finish(participants: &mut [Participant], gid: &str, commit: bool) -> Finished {
    let mut unresolved = Vec::new();
    let verb = if commit {
        "COMMIT PREPARED"
    } else {
        "ROLLBACK PREPARED"
    };
    let finish_sql = format!("{verb} '{gid}'");
    for p in participants.iter_mut() {
        if !p.prepared {
            match p.conn.as_mut() {
                Some(conn) => {
                    // An aborted or open transaction, or none: ROLLBACK leaves it idle.
                    p.clean = conn
                        .run_hidden("ROLLBACK")
                        .await
                        .is_ok_and(|r| r.status == b'I');
                }
                None => {
                    if let Err(e) = rollback_on_fresh(&p.pool, &finish_sql).await {
                        unresolved.push((p.shard, e));
                    }
                }
            }
            continue;
        }
        let done = match p.conn.as_mut() {
            Some(conn) => conn.run_hidden(&finish_sql).await.map(|_| ()),
            None => Err(ServerError::Closed {
                addr: p.pool.key.addr.to_string(),
            }),
        };
        if let Err(e) = done {
            p.clean = false;
            // The session that prepared it is gone or broken: any connection can finish it.
            match retry_on_fresh(&p.pool, &finish_sql).await {
                Ok(()) => {}
                Err(again) => {
                    tracing::error!(shard = p.shard, %gid, first = %e, error = %again, "a prepared transaction could not be finished");
                    unresolved.push((p.shard, again));
                }
            }
        }
    }
    Finished { unresolved }
}

/// Gives back clean connections; closes the others.
pub(super) fn release(participants: Vec<Participant>) {
    for p in participants {
        if let Some(conn) = p.conn {
            if p.clean {
                conn.release();
            }
        }
    }
}

async fn retry_on_fresh(pool: &Arc<Pool>, sql: &str) -> Result<(), String> {
    let mut conn = Box::pin(pool.checkout()).await.map_err(|e| e.to_string())?;
    conn.run_hidden(sql).await.map_err(|e| e.to_string())?;
    conn.release();
    Ok(())
}

/// `ROLLBACK PREPARED` where it is not known whether the shard prepared: "does not exist" is fine.
async fn rollback_on_fresh(pool: &Arc<Pool>, sql: &str) -> Result<(), String> {
    let mut conn = Box::pin(pool.checkout()).await.map_err(|e| e.to_string())?;
    match conn.run_hidden(sql).await {
        Ok(_) => {}
        Err(ServerError::Refused { code, .. }) if code == "42704" => {}
        Err(e) => return Err(e.to_string()),
    }
    conn.release();
    Ok(())
}
