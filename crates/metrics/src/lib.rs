//! Prometheus metrics of the gateway, registered into one injected [`Registry`] (never the
//! global default one). Labels are bounded: route names come from the configuration, status
//! classes and error kinds are fixed sets. Per-route children are resolved once at start so
//! the request path only touches atomics.
//!
//! May depend on `policy` (reason and outcome labels) only.

mod history;

pub use history::{DecisionHistory, Minute};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric family of the process.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    decisions: IntCounterVec,
    sync_runs: IntCounterVec,
    sync_last_success: IntGaugeVec,
    sync_objects: IntCounterVec,
    pub active_connections: IntGauge,
    pub requests_in_flight: IntGauge,
    /// 1 while the store answered the last readiness probe in time, else 0.
    pub store_up: IntGauge,
}

/// The children of one route, looked up once.
#[derive(Clone)]
pub struct RouteMetrics {
    /// Index 0..=4 for 1xx..5xx; index 5 for a response that was never written (client gone).
    by_class: [IntCounter; 6],
    pub duration: Histogram,
    upstream_errors: IntCounterVec,
    /// `[outcome][reason]`, outcome 0 = allow, 1 = deny, 2 = report-only (allowed, would deny).
    decisions: Vec<[IntCounter; 3]>,
    route: String,
}

/// Why talking to an upstream failed, as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    ConnectRefused,
    ConnectTimeout,
    Tls,
    ReadTimeout,
    WriteTimeout,
    Protocol,
    NoHealthyBackend,
    Other,
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::Tls => "tls",
            Self::ReadTimeout => "read_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::Protocol => "protocol",
            Self::NoHealthyBackend => "no_healthy_backend",
            Self::Other => "other",
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("portcullis".into()), None).unwrap_or_default();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "Requests answered, by route and status class"),
            &["route", "status_class"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request header to last response byte",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )
        .expect("static metric definition");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "upstream_errors_total",
                "Failures talking to upstreams, by route and kind",
            ),
            &["route", "kind"],
        )
        .expect("static metric definition");
        let decisions = IntCounterVec::new(
            Opts::new("decisions_total", "Access decisions, by route, outcome and reason"),
            &["route", "outcome", "reason"],
        )
        .expect("static metric definition");
        let sync_runs = IntCounterVec::new(
            Opts::new("sync_runs_total", "Sync runs, by source and result"),
            &["source", "result"],
        )
        .expect("static metric definition");
        let sync_last_success = IntGaugeVec::new(
            Opts::new(
                "sync_last_success_timestamp_seconds",
                "Unix time of the last successful run, by source",
            ),
            &["source"],
        )
        .expect("static metric definition");
        let sync_objects = IntCounterVec::new(
            Opts::new(
                "sync_objects_total",
                "Objects written by the sync, by source and change (upserted, removed)",
            ),
            &["source", "change"],
        )
        .expect("static metric definition");
        let active_connections = IntGauge::new(
            "active_connections",
            "Open client connections (TCP or TLS) on the proxy listeners",
        )
        .expect("static metric definition");
        let requests_in_flight =
            IntGauge::new("requests_in_flight", "Requests being handled now").expect("static metric definition");
        let store_up = IntGauge::new(
            "store_up",
            "1 when the store answered the last readiness probe within a second, else 0",
        )
        .expect("static metric definition");
        let build_info = IntGaugeVec::new(Opts::new("build_info", "Version of the running binary"), &["version"])
            .expect("static metric definition");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(decisions.clone()),
            Box::new(sync_runs.clone()),
            Box::new(sync_last_success.clone()),
            Box::new(sync_objects.clone()),
            Box::new(active_connections.clone()),
            Box::new(requests_in_flight.clone()),
            Box::new(store_up.clone()),
            Box::new(build_info),
        ] {
            // Registration only fails on duplicate names, which the definitions above rule out.
            let _ = registry.register(c);
        }
        Self {
            registry,
            requests,
            duration,
            upstream_errors,
            decisions,
            sync_runs,
            sync_last_success,
            sync_objects,
            active_connections,
            requests_in_flight,
            store_up,
        }
    }

    /// Resolves the children of one route (also used with `"none"` for unrouted requests).
    pub fn route(&self, route: &str) -> RouteMetrics {
        let class = |c: &str| self.requests.with_label_values(&[route, c]);
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
                class("none"),
            ],
            duration: self.duration.with_label_values(&[route]),
            upstream_errors: self.upstream_errors.clone(),
            decisions: policy::Reason::ALL
                .iter()
                .map(|r| {
                    let c = |o: &str| self.decisions.with_label_values(&[route, o, r.as_str()]);
                    [c("allow"), c("deny"), c("report_only")]
                })
                .collect(),
            route: route.to_string(),
        }
    }

    /// Counts a sync run (off the request path).
    pub fn sync_run(&self, source: &str, ok: bool, at: i64) {
        self.sync_runs
            .with_label_values(&[source, if ok { "ok" } else { "error" }])
            .inc();
        if ok {
            self.sync_last_success.with_label_values(&[source]).set(at);
        }
    }

    pub fn sync_objects(&self, source: &str, upserted: u64, removed: u64) {
        self.sync_objects
            .with_label_values(&[source, "upserted"])
            .inc_by(upserted);
        self.sync_objects
            .with_label_values(&[source, "removed"])
            .inc_by(removed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        // TextEncoder only fails on a broken writer; a Vec never is.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteMetrics {
    pub fn observe(&self, status: u16, seconds: f64) {
        let i = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.by_class[i].inc();
        self.duration.observe(seconds);
    }

    /// Counts one access decision.
    pub fn decision(&self, d: &policy::Decision) {
        let outcome = match (d.outcome, d.would_deny) {
            (policy::Outcome::Allow, None) => 0,
            (policy::Outcome::Deny(_), _) => 1,
            (policy::Outcome::Allow, Some(_)) => 2,
        };
        if let Some(c) = self.decisions.get(d.reason.index()) {
            c[outcome].inc();
        }
    }

    /// A request answered before `policy::decide` ran: open routes (allowed) and failed or
    /// missing authentication (refused), so the decision counters add up to every request
    /// a route received.
    pub fn decided_early(&self, reason: policy::Reason, allowed: bool) {
        if let Some(c) = self.decisions.get(reason.index()) {
            c[usize::from(!allowed)].inc();
        }
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        // Rare path: a label lookup here is fine.
        self.upstream_errors
            .with_label_values(&[self.route.as_str(), kind.as_str()])
            .inc();
    }
}
