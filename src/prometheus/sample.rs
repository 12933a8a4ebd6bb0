//! Sampling the live state into the recorder just before a scrape is rendered.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::Metrics;
use crate::pool::backend::Backend;
use crate::pool::breaker::BreakerState;
use crate::session::Shared;
use crate::stats::{ClientState, ServerState};

type Labels = Vec<(&'static str, String)>;

pub(super) fn sample(m: &Metrics, shared: &Shared) {
    let config = shared.config();
    let names = config.shard_names();
    let backend_labels = |b: &Backend| -> Labels {
        vec![
            ("shard", names.get(b.shard).cloned().unwrap_or_default()),
            ("role", b.role.as_str().to_string()),
            ("backend", b.addr.to_string()),
        ]
    };
    m.gauge(
        "pgscale_build_info",
        &[("version", env!("CARGO_PKG_VERSION").to_string())],
    )
    .set(1.0);

    // Clients by state (admin-console clients included, as PgBouncer lists them).
    let mut clients = [0u64; 3];
    for client in shared.stats.clients.all() {
        clients[client.state() as usize] += 1;
    }
    for state in [ClientState::Idle, ClientState::Active, ClientState::Waiting] {
        m.gauge(
            "pgscale_client_connections",
            &[("state", state.as_str().to_string())],
        )
        .set(clients[state as usize] as f64);
    }
    let stats = &shared.stats;
    m.counter("pgscale_client_connections_accepted_total", &[])
        .absolute(stats.clients_accepted.load(Ordering::Relaxed));
    for (reason, cell) in [
        ("max_client_conn", &stats.refused_max_client_conn),
        ("auth", &stats.refused_auth),
        ("startup", &stats.refused_startup),
        ("tls_handshake", &stats.tls_handshakes_failed),
    ] {
        m.counter(
            "pgscale_client_connections_refused_total",
            &[("reason", reason.to_string())],
        )
        .absolute(cell.load(Ordering::Relaxed));
    }

    // Server connections and pool waits, summed per backend over its pools.
    #[derive(Default)]
    struct PerBackend {
        labels: Labels,
        active: u64,
        idle: u64,
        waits: u64,
        timeouts: u64,
    }
    let mut backends: BTreeMap<String, PerBackend> = BTreeMap::new();
    for pool in shared.pools.all() {
        let b = pool.backend();
        let entry = backends
            .entry(b.addr.to_string())
            .or_insert_with(|| PerBackend {
                labels: backend_labels(b),
                ..Default::default()
            });
        for server in pool.servers.all() {
            match server.state() {
                ServerState::Active => entry.active += 1,
                ServerState::Idle => entry.idle += 1,
            }
        }
        entry.waits += pool.waits.load(Ordering::Relaxed);
        entry.timeouts += pool.timeouts.load(Ordering::Relaxed);
    }
    for b in backends.values() {
        for (state, n) in [("active", b.active), ("idle", b.idle)] {
            let mut labels = b.labels.clone();
            labels.push(("state", state.to_string()));
            m.gauge("pgscale_server_connections", &labels).set(n as f64);
        }
        m.counter("pgscale_pool_waits_total", &b.labels)
            .absolute(b.waits);
        m.counter("pgscale_pool_timeouts_total", &b.labels)
            .absolute(b.timeouts);
    }

    // Per database.
    for (database, db) in stats.databases() {
        for (route, cell) in [
            ("primary", &db.primary_queries),
            ("replica", &db.replica_queries),
            ("fanout", &db.fanout_queries),
        ] {
            m.counter(
                "pgscale_queries_total",
                &[("database", database.clone()), ("route", route.to_string())],
            )
            .absolute(cell.load(Ordering::Relaxed));
        }
        let labels = [("database", database.clone())];
        m.counter("pgscale_transactions_total", &labels)
            .absolute(db.xact_count.load(Ordering::Relaxed));
        m.counter("pgscale_client_received_bytes_total", &labels)
            .absolute(db.received.load(Ordering::Relaxed));
        m.counter("pgscale_client_sent_bytes_total", &labels)
            .absolute(db.sent.load(Ordering::Relaxed));
        m.gauge("pgscale_paused", &labels)
            .set(if shared.gates.paused(&database) {
                1.0
            } else {
                0.0
            });
    }
    m.gauge("pgscale_paused", &[("database", "*".to_string())])
        .set(if shared.gates.all_paused() { 1.0 } else { 0.0 });
    for (class, n) in stats.errors() {
        m.counter("pgscale_errors_total", &[("sqlstate_class", class)])
            .absolute(n);
    }

    // Backends: breakers, health, lag.
    let topology = shared.topology();
    for backend in topology.backends() {
        let labels = backend_labels(backend);
        let state = match backend.breaker.state() {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        };
        m.gauge("pgscale_backend_breaker_state", &labels).set(state);
        m.counter("pgscale_backend_breaker_opened_total", &labels)
            .absolute(backend.breaker.opened_total());
        let up = backend.health.fresh(std::time::Instant::now());
        m.gauge("pgscale_backend_up", &labels)
            .set(if up { 1.0 } else { 0.0 });
        if let Some(rtt) = backend.health.rtt() {
            m.gauge("pgscale_backend_rtt_seconds", &labels)
                .set(rtt.as_secs_f64());
        }
        if backend.role == crate::pool::backend::Role::Replica {
            let lag_labels = vec![labels[0].clone(), labels[2].clone()];
            if let Some(bytes) = backend.health.lag_bytes() {
                m.gauge("pgscale_replica_lag_bytes", &lag_labels)
                    .set(bytes as f64);
            }
            if let Some(lag) = backend.health.lag() {
                m.gauge("pgscale_replica_lag_seconds", &lag_labels)
                    .set(lag.as_secs_f64());
            }
        }
    }

    m.counter("pgscale_reads_retried_total", &[])
        .absolute(shared.reads_retried.load(Ordering::Relaxed));
    let plans = shared.plans.stats();
    m.counter("pgscale_plan_cache_hits_total", &[])
        .absolute(plans.hits);
    m.counter("pgscale_plan_cache_misses_total", &[])
        .absolute(plans.misses);
    m.gauge("pgscale_plan_cache_entries", &[])
        .set(plans.entries as f64);
    m.counter(
        "pgscale_config_reloads_total",
        &[("result", "ok".to_string())],
    )
    .absolute(stats.reloads_ok.load(Ordering::Relaxed));
    m.counter(
        "pgscale_config_reloads_total",
        &[("result", "failed".to_string())],
    )
    .absolute(stats.reloads_failed.load(Ordering::Relaxed));
}
