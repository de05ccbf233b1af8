//! Prometheus metrics: the recorder, the text `/metrics` serves, and the names recorded.
//!
//! Recorded where they happen (command layer, HTTP middleware, workers); projection lag
//! and stall gauges are refreshed by a small sampler task in `serve` from the same status
//! rows `GET /v1/projections` shows.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Events appended, by `type`.
pub const EVENTS_APPENDED: &str = "jobsource_events_appended_total";
/// Append latency (seconds).
pub const APPEND_DURATION: &str = "jobsource_append_duration_seconds";
/// Expected-version conflicts met by appends.
pub const APPEND_CONFLICTS: &str = "jobsource_append_conflicts_total";
/// Commands answered from an idempotency record.
pub const IDEMPOTENT_REPLAYS: &str = "jobsource_idempotent_replays_total";
/// Events in the log after a projection's checkpoint, by `projection`, `partition`.
pub const PROJECTION_LAG: &str = "jobsource_projection_lag_events";
/// Stalled partitions, by `projection`.
pub const PROJECTION_STALLED: &str = "jobsource_projection_stalled_partitions";
/// Job leases expired by the timers (or an offline machine).
pub const LEASES_EXPIRED: &str = "jobsource_job_leases_expired_total";
/// Claims answered, by `result` (`claimed`, `empty`).
pub const CLAIMS: &str = "jobsource_claims_total";
/// HTTP requests, by `method`, `route`, `status`.
pub const HTTP_REQUESTS: &str = "jobsource_http_requests_total";
/// HTTP latency (seconds), by `method`, `route`.
pub const HTTP_DURATION: &str = "jobsource_http_request_duration_seconds";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the global recorder (once per process; later calls return the same handle).
/// `None` when another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.upkeep_timeout(Duration::from_secs(5)).install_recorder());
            match builder {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS_APPENDED, "Events appended, by type");
    describe_histogram!(APPEND_DURATION, Unit::Seconds, "Event store append latency");
    describe_counter!(
        APPEND_CONFLICTS,
        "Appends refused by the expected-version check"
    );
    describe_counter!(
        IDEMPOTENT_REPLAYS,
        "Commands answered from an idempotency record"
    );
    describe_gauge!(
        PROJECTION_LAG,
        "Events after the checkpoint, per projection and partition"
    );
    describe_gauge!(PROJECTION_STALLED, "Stalled partitions per projection");
    describe_counter!(
        LEASES_EXPIRED,
        "Job leases expired (timers and offline machines)"
    );
    describe_counter!(CLAIMS, "Worker claims by result (claimed, empty)");
    describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route and status");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency by route"
    );
}

/// The Prometheus text format of every metric (empty without a recorder): the body of
/// `GET /metrics`.
pub fn render() -> String {
    install().map(|h| h.render()).unwrap_or_default()
}

/// Updates the lag and stall gauges from status rows.
pub fn record_status(rows: &[crate::status::ProjectionStatus]) {
    let mut stalled = std::collections::BTreeMap::<&str, f64>::new();
    for r in rows {
        metrics::gauge!(PROJECTION_LAG, "projection" => r.projection.clone(),
            "partition" => r.partition.to_string())
        .set(r.lag as f64);
        *stalled.entry(&r.projection).or_default() += f64::from(u8::from(r.state == "stalled"));
    }
    for (projection, n) in stalled {
        metrics::gauge!(PROJECTION_STALLED, "projection" => projection.to_owned()).set(n);
    }
}
