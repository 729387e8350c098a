//! The last hour of access decisions, minute by minute, for the admin console's Overview. A
//! background task calls [`DecisionHistory::sample`] once a minute: it reads the decision
//! counters (summed over routes) and keeps each minute's increase by outcome and reason. The
//! request path is untouched — it only ever increments the counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::Metrics;

/// Minutes kept.
pub const MINUTES: usize = 60;

/// Decisions by (outcome, reason): `allow`, `deny` or `report_only`, and a reason code.
pub type Counts = BTreeMap<(String, String), u64>;

/// One minute: when it ended (Unix seconds) and what was decided in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minute {
    pub at: i64,
    pub counts: Counts,
}

pub struct DecisionHistory {
    metrics: Metrics,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The counters at the last sample.
    last: Counts,
    last_at: i64,
    minutes: VecDeque<Minute>,
}

impl DecisionHistory {
    /// Counting from `now` (the counters' values then are the baseline).
    pub fn new(metrics: Metrics, now: i64) -> Self {
        let last = totals(&metrics);
        Self {
            metrics,
            inner: Mutex::new(Inner {
                last,
                last_at: now,
                minutes: VecDeque::with_capacity(MINUTES + 1),
            }),
        }
    }

    /// Closes the minute ending `now`.
    pub fn sample(&self, now: i64) {
        let totals = totals(&self.metrics);
        // A poisoned lock only means a panic elsewhere mid-update: the counts are still counts.
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let counts = increase(&inner.last, &totals);
        inner.minutes.push_back(Minute { at: now, counts });
        while inner.minutes.len() > MINUTES {
            inner.minutes.pop_front();
        }
        inner.last = totals;
        inner.last_at = now;
    }

    /// The kept minutes, oldest first, and the minute running now (up to `now`), so that a
    /// decision made a second ago is already there.
    pub fn last_hour(&self, now: i64) -> Vec<Minute> {
        let totals = totals(&self.metrics);
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<Minute> = inner.minutes.iter().cloned().collect();
        out.push(Minute {
            at: now.max(inner.last_at),
            counts: increase(&inner.last, &totals),
        });
        if out.len() > MINUTES {
            out.remove(0);
        }
        out
    }
}

/// The decision counters now, summed over routes.
fn totals(m: &Metrics) -> Counts {
    use prometheus::core::Collector;
    let mut counts = Counts::new();
    for family in m.decisions.collect() {
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            let value = metric.get_counter().value();
            if value > 0.0 {
                // Counters are whole numbers held as f64.
                *counts.entry((label("outcome"), label("reason"))).or_default() += value as u64;
            }
        }
    }
    counts
}

/// What grew from `before` to `after` (counters only grow; a key not in `before` is new).
fn increase(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(m: &Metrics, reason: policy::Reason, allowed: bool, n: usize) {
        let r = m.route("app");
        for _ in 0..n {
            r.decided_early(reason, allowed);
        }
    }

    #[test]
    fn each_minute_holds_what_was_decided_in_it() {
        let m = Metrics::new();
        decide(&m, policy::Reason::OpenRoute, true, 3); // before the history: not counted
        let h = DecisionHistory::new(m.clone(), 1_000);
        decide(&m, policy::Reason::OpenRoute, true, 2);
        decide(&m, policy::Reason::Unauthenticated, false, 1);
        h.sample(1_060);
        decide(&m, policy::Reason::Unauthenticated, false, 4);
        let hour = h.last_hour(1_090);
        assert_eq!(hour.len(), 2);
        let key = |o: &str, r: policy::Reason| (o.to_string(), r.as_str().to_string());
        assert_eq!(hour[0].at, 1_060);
        assert_eq!(hour[0].counts[&key("allow", policy::Reason::OpenRoute)], 2);
        assert_eq!(hour[0].counts[&key("deny", policy::Reason::Unauthenticated)], 1);
        assert_eq!(hour[1].at, 1_090, "the running minute");
        assert_eq!(hour[1].counts.len(), 1);
        assert_eq!(hour[1].counts[&key("deny", policy::Reason::Unauthenticated)], 4);
        for i in 0..70 {
            h.sample(1_120 + 60 * i);
        }
        assert_eq!(h.last_hour(6_000).len(), MINUTES, "an hour, no more");
    }
}
