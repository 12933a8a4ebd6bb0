//! Prometheus metrics: recorded and rendered with the `metrics` crate and its Prometheus exporter,
//! served at `GET /metrics` on `[metrics] address`.
//!
//! Latency histograms are recorded as requests end. Everything else (connection gauges, counters
//! the sessions keep as atomics for `SHOW STATS`, breaker and lag gauges) is sampled from the live
//! state when Prometheus scrapes, so the data path does no extra bookkeeping for it. Each proxy owns
//! its recorder (none is installed globally), so several proxies in one process do not mix.

mod http;
mod sample;

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

pub use http::serve;

use crate::stats::Route;

/// Latency buckets in seconds: sub-millisecond pooled queries up to slow reports.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Series not updated for this long (a removed backend, a database no longer used) are dropped.
const IDLE_SERIES: Duration = Duration::from_secs(600);

static METADATA: Metadata<'static> = Metadata::new("pgscale", Level::INFO, Some("pgscale"));

/// This proxy's metrics recorder and the histograms sessions record into.
pub struct Metrics {
    recorder: PrometheusRecorder,
    query_primary: Histogram,
    query_replica: Histogram,
    query_fanout: Histogram,
    transaction: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            // Not histograms: their handles are cached, and a series dropped for idleness would
            // never come back.
            .idle_timeout(
                metrics_util::MetricKindMask::COUNTER | metrics_util::MetricKindMask::GAUGE,
                Some(IDLE_SERIES),
            )
            .build_recorder();
        describe(&recorder);
        let route = |r: Route| {
            recorder.register_histogram(
                &Key::from_parts(
                    "pgscale_query_duration_seconds",
                    vec![Label::new("route", r.as_str())],
                ),
                &METADATA,
            )
        };
        Metrics {
            query_primary: route(Route::Primary),
            query_replica: route(Route::Replica),
            query_fanout: route(Route::Fanout),
            transaction: recorder.register_histogram(
                &Key::from_name("pgscale_transaction_duration_seconds"),
                &METADATA,
            ),
            recorder,
        }
    }

    /// A request took `seconds`, from its first byte to its `ReadyForQuery`.
    pub fn query_duration(&self, route: Route, seconds: f64) {
        match route {
            Route::Primary => self.query_primary.record(seconds),
            Route::Replica => self.query_replica.record(seconds),
            Route::Fanout => self.query_fanout.record(seconds),
        }
    }

    /// The histogram a pool records its checkout waits into.
    pub fn pool_wait_histogram(
        &self,
        backend: &crate::pool::backend::Backend,
        shard: &str,
    ) -> Histogram {
        let labels = vec![
            Label::new("shard", shard.to_string()),
            Label::new("role", backend.role.as_str()),
            Label::new("backend", backend.addr.to_string()),
        ];
        self.recorder.register_histogram(
            &Key::from_parts("pgscale_pool_wait_seconds", labels),
            &METADATA,
        )
    }

    pub fn transaction_duration(&self, seconds: f64) {
        self.transaction.record(seconds);
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, to_labels(labels)), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, to_labels(labels)), &METADATA)
    }

    /// The Prometheus text exposition of everything recorded (after sampling the live state).
    pub fn render(&self, shared: &crate::session::Shared) -> String {
        sample::sample(self, shared);
        let handle = self.recorder.handle();
        handle.run_upkeep();
        handle.render()
    }
}

fn to_labels(labels: &[(&'static str, String)]) -> Vec<Label> {
    labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.clone()))
        .collect()
}

/// `# HELP` lines: what each metric means.
fn describe(recorder: &PrometheusRecorder) {
    let counters: &[(&'static str, &'static str)] = &[
        (
            "pgscale_client_connections_accepted_total",
            "Client connections accepted.",
        ),
        (
            "pgscale_client_connections_refused_total",
            "Client connections refused at login, by reason.",
        ),
        (
            "pgscale_pool_waits_total",
            "Checkouts that found no free server connection and waited.",
        ),
        (
            "pgscale_pool_timeouts_total",
            "Checkouts that gave up waiting (SQLSTATE 53300).",
        ),
        (
            "pgscale_queries_total",
            "Requests answered, by database and route (primary, replica, fanout).",
        ),
        (
            "pgscale_transactions_total",
            "Transactions finished, by database.",
        ),
        (
            "pgscale_client_received_bytes_total",
            "Bytes received from clients, by database.",
        ),
        (
            "pgscale_client_sent_bytes_total",
            "Bytes sent to clients, by database.",
        ),
        (
            "pgscale_errors_total",
            "ErrorResponses sent to clients, by SQLSTATE class.",
        ),
        (
            "pgscale_backend_breaker_opened_total",
            "Times a backend's circuit breaker opened.",
        ),
        (
            "pgscale_reads_retried_total",
            "Reads sent again to another server after theirs failed before answering.",
        ),
        (
            "pgscale_plan_cache_hits_total",
            "Statements routed from the plan cache.",
        ),
        (
            "pgscale_plan_cache_misses_total",
            "Statements parsed and classified (plan cache misses).",
        ),
        (
            "pgscale_config_reloads_total",
            "Config reloads, by result (ok, failed).",
        ),
    ];
    for (name, help) in counters {
        recorder.describe_counter((*name).into(), None, (*help).into());
    }
    let gauges: &[(&'static str, &'static str)] = &[
        (
            "pgscale_build_info",
            "Always 1; the version label says which pgscale runs.",
        ),
        (
            "pgscale_client_connections",
            "Client connections by state (active, idle, waiting).",
        ),
        (
            "pgscale_server_connections",
            "Server connections by backend and state (active, idle).",
        ),
        (
            "pgscale_backend_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        ),
        (
            "pgscale_backend_up",
            "1 if the backend's last health poll succeeded.",
        ),
        (
            "pgscale_backend_rtt_seconds",
            "Round trip of the backend's last health poll.",
        ),
        (
            "pgscale_replica_lag_bytes",
            "WAL bytes the replica is behind its primary.",
        ),
        (
            "pgscale_replica_lag_seconds",
            "Age of the last transaction the replica replayed, while it lags.",
        ),
        (
            "pgscale_plan_cache_entries",
            "Statement shapes in the plan cache.",
        ),
        (
            "pgscale_paused",
            "1 while PAUSE holds the database (* = all).",
        ),
    ];
    for (name, help) in gauges {
        recorder.describe_gauge((*name).into(), None, (*help).into());
    }
    recorder.describe_histogram(
        "pgscale_query_duration_seconds".into(),
        Some(Unit::Seconds),
        "Request latency from its first byte at the proxy to its ReadyForQuery, by route.".into(),
    );
    recorder.describe_histogram(
        "pgscale_pool_wait_seconds".into(),
        Some(Unit::Seconds),
        "How long checkouts that found no free server connection waited, by backend.".into(),
    );
    recorder.describe_histogram(
        "pgscale_transaction_duration_seconds".into(),
        Some(Unit::Seconds),
        "Transaction latency from its first request to the ReadyForQuery that ends it.".into(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_latencies_are_rendered_as_histograms() {
        let metrics = Metrics::new();
        metrics.query_duration(Route::Replica, 0.003);
        metrics.transaction_duration(0.02);
        let text = metrics.recorder.handle().render();
        assert!(
            text.contains(r#"pgscale_query_duration_seconds_bucket{route="replica",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"pgscale_transaction_duration_seconds_count 1"#),
            "{text}"
        );
    }
}
