//! The `SHOW` commands' tables. Column names are PgBouncer's where the meaning is the same (so
//! dashboards and habits carry over); pgscale's own columns (shard, role) come after them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::commands::{Show, HELP};
use super::table::{int, text, Kind, Table};
use crate::config::{Config, PoolMode};
use crate::pool::breaker::BreakerState;
use crate::pool::Pool;
use crate::session::Shared;
use crate::stats::{micros, unix_micros, ClientEntry, ClientState, ServerState};

pub fn show(what: Show, shared: &Shared) -> Table {
    match what {
        Show::Pools => pools(shared),
        Show::Servers => servers(shared),
        Show::Clients => clients(shared),
        Show::Stats => stats(shared),
        Show::Databases => databases(shared),
        Show::Config => super::config_table::config(&shared.config()),
        Show::Shards => shards(shared),
        Show::Reshard => super::reshard::show(shared),
        Show::Version => {
            let mut table = Table::new(&[("version", Kind::Text)]);
            table.push(vec![text(format!("pgscale {}", env!("CARGO_PKG_VERSION")))]);
            table
        }
        Show::Help => {
            let mut table = Table::new(&[("command", Kind::Text)]);
            for line in HELP {
                table.push(vec![text(*line)]);
            }
            table
        }
    }
}

fn mode_name(mode: PoolMode) -> &'static str {
    match mode {
        PoolMode::Session => "session",
        PoolMode::Transaction => "transaction",
    }
}

fn shard_name(config: &Config, index: usize) -> String {
    config.shard_names().get(index).cloned().unwrap_or_default()
}

/// Pools sorted for display: database, user, shard, primary before replicas.
fn sorted_pools(shared: &Shared) -> Vec<std::sync::Arc<Pool>> {
    let mut pools = shared.pools.all();
    pools.sort_by(|a, b| {
        (
            &a.key.database,
            &a.key.user,
            a.backend().shard,
            a.backend().role.as_str(),
            a.key.addr.to_string(),
        )
            .cmp(&(
                &b.key.database,
                &b.key.user,
                b.backend().shard,
                b.backend().role.as_str(),
                b.key.addr.to_string(),
            ))
    });
    pools
}

/// The pool a client is counted under: its database and server login on the default shard's
/// primary (where its session starts); `None` for admin-console clients.
fn home_pool_key(
    config: &Config,
    shared: &Shared,
    client: &ClientEntry,
) -> Option<(String, String, String)> {
    if client.admin {
        return None;
    }
    let user = config.user(&client.user)?;
    let topology = shared.topology();
    let shard = config
        .default_shard_index()
        .min(topology.shards.len().saturating_sub(1));
    let addr = topology.shards.get(shard)?.primary.addr.to_string();
    Some((
        client.database.clone(),
        user.server_user().to_string(),
        addr,
    ))
}

fn pools(shared: &Shared) -> Table {
    let config = shared.config();
    let mut table = Table::new(&[
        ("database", Kind::Text),
        ("user", Kind::Text),
        ("cl_active", Kind::Int),
        ("cl_waiting", Kind::Int),
        ("cl_active_cancel_req", Kind::Int),
        ("cl_waiting_cancel_req", Kind::Int),
        ("sv_active", Kind::Int),
        ("sv_active_cancel", Kind::Int),
        ("sv_being_canceled", Kind::Int),
        ("sv_idle", Kind::Int),
        ("sv_used", Kind::Int),
        ("sv_tested", Kind::Int),
        ("sv_login", Kind::Int),
        ("maxwait", Kind::Int),
        ("maxwait_us", Kind::Int),
        ("pool_mode", Kind::Text),
        ("shard", Kind::Text),
        ("role", Kind::Text),
        ("host", Kind::Text),
        ("port", Kind::Int),
        ("pool_size", Kind::Int),
        ("paused", Kind::Int),
    ]);
    // Clients per home pool: (active, waiting, longest wait in µs).
    let now = unix_micros(SystemTime::now());
    let mut clients: HashMap<(String, String, String), (u64, u64, u64)> = HashMap::new();
    for client in shared.stats.clients.all() {
        let Some(key) = home_pool_key(&config, shared, &client) else {
            continue;
        };
        let entry = clients.entry(key).or_default();
        match client.state() {
            ClientState::Waiting => {
                entry.1 += 1;
                let waited = client
                    .waiting_since_us()
                    .map_or(0, |t| now.saturating_sub(t));
                entry.2 = entry.2.max(waited);
            }
            ClientState::Active | ClientState::Idle => entry.0 += 1,
        }
    }
    for pool in sorted_pools(shared) {
        let key = (
            pool.key.database.clone(),
            pool.key.user.clone(),
            pool.key.addr.to_string(),
        );
        let (cl_active, cl_waiting, maxwait_us) = clients.get(&key).copied().unwrap_or_default();
        let (mut active, mut idle) = (0u64, 0u64);
        for server in pool.servers.all() {
            match server.state() {
                ServerState::Active => active += 1,
                ServerState::Idle => idle += 1,
            }
        }
        let backend = pool.backend();
        table.push(vec![
            text(&pool.key.database),
            text(&pool.key.user),
            int(cl_active),
            int(cl_waiting.max(pool.waiting() as u64)),
            int(0),
            int(0),
            int(active),
            int(0),
            int(0),
            int(idle),
            int(0),
            int(0),
            int(0),
            int(maxwait_us / 1_000_000),
            int(maxwait_us % 1_000_000),
            text(mode_name(config.pool.mode)),
            text(shard_name(&config, backend.shard)),
            text(backend.role.as_str()),
            text(&pool.key.addr.host),
            int(pool.key.addr.port),
            int(pool.settings().size as u64),
            int(u8::from(shared.gates.paused(&pool.key.database))),
        ]);
    }
    table
}

/// A timestamp as PgBouncer prints it: `YYYY-MM-DD HH:MM:SS UTC`.
fn timestamp_us(us: u64) -> String {
    let secs = (us / 1_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `SHOW SERVERS` and `SHOW CLIENTS` share PgBouncer's columns.
const CONNECTION_COLUMNS: &[(&str, Kind)] = &[
    ("type", Kind::Text),
    ("user", Kind::Text),
    ("database", Kind::Text),
    ("state", Kind::Text),
    ("addr", Kind::Text),
    ("port", Kind::Int),
    ("local_addr", Kind::Text),
    ("local_port", Kind::Int),
    ("connect_time", Kind::Text),
    ("request_time", Kind::Text),
    ("wait", Kind::Int),
    ("wait_us", Kind::Int),
    ("close_needed", Kind::Int),
    ("ptr", Kind::Text),
    ("link", Kind::Text),
    ("remote_pid", Kind::Int),
    ("tls", Kind::Text),
    ("application_name", Kind::Text),
];

fn servers(shared: &Shared) -> Table {
    let config = shared.config();
    let mut columns = CONNECTION_COLUMNS.to_vec();
    columns.extend([("shard", Kind::Text), ("role", Kind::Text)]);
    let mut table = Table::new(&columns);
    for pool in sorted_pools(shared) {
        let backend = pool.backend();
        for server in pool.servers.all() {
            let link = server.client_id();
            table.push(vec![
                text("S"),
                text(&pool.key.user),
                text(&pool.key.database),
                text(server.state().as_str()),
                text(&pool.key.addr.host),
                int(pool.key.addr.port),
                text(server.local.map(|a| a.ip().to_string()).unwrap_or_default()),
                int(server.local.map_or(0, |a| a.port())),
                text(timestamp_us(unix_micros(server.connect_time))),
                text(timestamp_us(server.request_time_us())),
                int(0),
                int(0),
                int(0),
                text(format!("0x{:x}", server.id)),
                text(if link == 0 {
                    String::new()
                } else {
                    format!("0x{link:x}")
                }),
                int(server.pid),
                text(""),
                text(""),
                text(shard_name(&config, backend.shard)),
                text(backend.role.as_str()),
            ]);
        }
    }
    table
}

fn clients(shared: &Shared) -> Table {
    let mut table = Table::new(CONNECTION_COLUMNS);
    let now = unix_micros(SystemTime::now());
    for client in shared.stats.clients.all() {
        let waited = client
            .waiting_since_us()
            .map_or(0, |t| now.saturating_sub(t));
        let server_id = client.server_id.load(Ordering::Relaxed);
        table.push(vec![
            text("C"),
            text(&client.user),
            text(&client.database),
            text(client.state().as_str()),
            text(client.peer.map(|a| a.ip().to_string()).unwrap_or_default()),
            int(client.peer.map_or(0, |a| a.port())),
            text(client.local.map(|a| a.ip().to_string()).unwrap_or_default()),
            int(client.local.map_or(0, |a| a.port())),
            text(timestamp_us(unix_micros(client.connect_time))),
            text(timestamp_us(client.request_time_us())),
            int(waited / 1_000_000),
            int(waited % 1_000_000),
            int(0),
            text(format!("0x{:x}", client.id)),
            text(if server_id == 0 {
                String::new()
            } else {
                format!("0x{server_id:x}")
            }),
            int(0),
            text(""),
            text(&client.application_name),
        ]);
    }
    table
}

fn stats(shared: &Shared) -> Table {
    let mut table = Table::new(&[
        ("database", Kind::Text),
        ("total_xact_count", Kind::Int),
        ("total_query_count", Kind::Int),
        ("total_received", Kind::Int),
        ("total_sent", Kind::Int),
        ("total_xact_time", Kind::Int),
        ("total_query_time", Kind::Int),
        ("total_wait_time", Kind::Int),
        ("avg_xact_count", Kind::Int),
        ("avg_query_count", Kind::Int),
        ("avg_recv", Kind::Int),
        ("avg_sent", Kind::Int),
        ("avg_xact_time", Kind::Int),
        ("avg_query_time", Kind::Int),
        ("avg_wait_time", Kind::Int),
        ("primary_query_count", Kind::Int),
        ("replica_query_count", Kind::Int),
        ("fanout_query_count", Kind::Int),
    ]);
    let uptime = shared
        .stats
        .started
        .and_then(|t| t.elapsed().ok())
        .map_or(1, |d| d.as_secs().max(1));
    let mut wait_us: HashMap<String, u64> = HashMap::new();
    for pool in shared.pools.all() {
        *wait_us.entry(pool.key.database.clone()).or_default() +=
            pool.wait_us.load(Ordering::Relaxed);
    }
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    for (database, db) in shared.stats.databases() {
        let xacts = load(&db.xact_count);
        let queries = load(&db.query_count);
        let waits = wait_us.get(&database).copied().unwrap_or(0);
        table.push(vec![
            text(&database),
            int(xacts),
            int(queries),
            int(load(&db.received)),
            int(load(&db.sent)),
            int(load(&db.xact_time_us)),
            int(load(&db.query_time_us)),
            int(waits),
            int(xacts / uptime),
            int(queries / uptime),
            int(load(&db.received) / uptime),
            int(load(&db.sent) / uptime),
            int(load(&db.xact_time_us).checked_div(xacts).unwrap_or(0)),
            int(load(&db.query_time_us).checked_div(queries).unwrap_or(0)),
            int(waits.checked_div(queries).unwrap_or(0)),
            int(load(&db.primary_queries)),
            int(load(&db.replica_queries)),
            int(load(&db.fanout_queries)),
        ]);
    }
    table
}

/// `SHOW DATABASES` rows: (database, shard, role, backend) → (open connections, pool sizes, host,
/// port).
type DatabaseRowKey = (String, usize, &'static str, String);
type DatabaseRow = (u64, u64, String, u16);

fn databases(shared: &Shared) -> Table {
    let config = shared.config();
    let mut table = Table::new(&[
        ("name", Kind::Text),
        ("host", Kind::Text),
        ("port", Kind::Int),
        ("database", Kind::Text),
        ("force_user", Kind::Text),
        ("pool_size", Kind::Int),
        ("min_pool_size", Kind::Int),
        ("reserve_pool", Kind::Int),
        ("pool_mode", Kind::Text),
        ("max_connections", Kind::Int),
        ("current_connections", Kind::Int),
        ("paused", Kind::Int),
        ("disabled", Kind::Int),
        ("shard", Kind::Text),
        ("role", Kind::Text),
    ]);
    // One row per database and backend that has pools (databases are not declared: any name a
    // client asks for is passed through to the servers).
    let mut rows: std::collections::BTreeMap<DatabaseRowKey, DatabaseRow> = Default::default();
    for pool in shared.pools.all() {
        let b = pool.backend();
        let key = (
            pool.key.database.clone(),
            b.shard,
            b.role.as_str(),
            pool.key.addr.to_string(),
        );
        let entry =
            rows.entry(key)
                .or_insert((0, 0, pool.key.addr.host.clone(), pool.key.addr.port));
        entry.0 += pool.open_connections() as u64;
        entry.1 += pool.settings().size as u64;
    }
    for ((database, shard, role, _), (open, size, host, port)) in rows {
        table.push(vec![
            text(&database),
            text(host),
            int(port),
            text(&database),
            text(""),
            int(size),
            int(config.pool.min_idle as u64),
            int(0),
            text(mode_name(config.pool.mode)),
            int(0),
            int(open),
            int(u8::from(shared.gates.paused(&database))),
            int(0),
            text(shard_name(&config, shard)),
            text(role),
        ]);
    }
    table
}

fn shards(shared: &Shared) -> Table {
    let config = shared.config();
    let mut table = Table::new(&[
        ("shard", Kind::Text),
        ("index", Kind::Int),
        ("vnodes", Kind::Int),
        ("key_share", Kind::Text),
        ("role", Kind::Text),
        ("host", Kind::Text),
        ("port", Kind::Int),
        ("zone", Kind::Text),
        ("healthy", Kind::Int),
        ("breaker", Kind::Text),
        ("breaker_opened", Kind::Int),
        ("rtt_us", Kind::Int),
        ("lag_bytes", Kind::Int),
        ("lag_ms", Kind::Int),
        ("connections", Kind::Int),
    ]);
    let ring = shared.sharding.as_ref().map(|s| s.ring());
    let shares = ring.as_ref().map(|r| r.shares()).unwrap_or_default();
    let vnodes = ring.as_ref().map_or(0, |r| r.vnodes_per_shard());
    let now = std::time::Instant::now();
    for shard in &shared.topology().shards {
        let share = shares
            .get(shard.index)
            .map_or_else(|| "1.0000".to_string(), |s| format!("{s:.4}"));
        for backend in std::iter::once(&shard.primary).chain(&shard.replicas) {
            let breaker = match backend.breaker.state() {
                BreakerState::Closed => "closed",
                BreakerState::HalfOpen => "half-open",
                BreakerState::Open => "open",
            };
            table.push(vec![
                text(shard_name(&config, shard.index)),
                int(shard.index as u64),
                int(vnodes),
                text(&share),
                text(backend.role.as_str()),
                text(&backend.addr.host),
                int(backend.addr.port),
                text(backend.zone.clone().unwrap_or_default()),
                int(u8::from(backend.usable_at(now))),
                text(breaker),
                int(backend.breaker.opened_total()),
                backend.health.rtt().map(|d| micros(d).to_string()),
                backend.health.lag_bytes().map(|b| b.to_string()),
                backend.health.lag().map(|d| d.as_millis().to_string()),
                int(backend.registered_conns() as u64),
            ]);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_like_pgbouncer() {
        assert_eq!(timestamp_us(0), "1970-01-01 00:00:00 UTC");
        // 2026-11-23 09:35:30 UTC
        assert_eq!(
            timestamp_us(1_795_426_530_000_000),
            "2026-11-23 09:35:30 UTC"
        );
        assert_eq!(timestamp_us(951_782_400_000_000), "2000-02-29 00:00:00 UTC");
    }
}
