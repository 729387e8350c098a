//! When each source runs. Every round syncs Entra devices (by delta); a full Entra round
//! (cursor dropped, with a sweep) comes at least every `full_reconcile`; Intune and Jamf Pro
//! run on their own, longer intervals; rounds are `interval` apart plus up to 10 % jitter, so
//! several nodes' timers drift apart. Pure: the loop gives it the time.

use std::time::Duration;

use tokio::time::Instant;

use crate::SyncSettings;

/// The sources due in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Drop the Entra cursor first: a full round with a sweep.
    pub full: bool,
    pub intune: bool,
    pub jamf: bool,
}

/// The schedule of one node's sync.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    full_reconcile: Duration,
    intune: Option<Duration>,
    jamf: Option<Duration>,
    last_full: Instant,
    last_intune: Option<Instant>,
    last_jamf: Option<Instant>,
}

impl Schedule {
    /// A schedule starting at `now`: the first round resumes from the stored cursor (it is
    /// not full) and runs Intune and Jamf when they are on.
    pub fn new(s: &SyncSettings, jamf: bool, now: Instant) -> Self {
        Self {
            interval: s.interval,
            full_reconcile: s.full_reconcile,
            intune: s.intune.then_some(s.intune_interval),
            jamf: jamf.then_some(s.jamf_interval),
            last_full: now,
            last_intune: None,
            last_jamf: None,
        }
    }

    /// What runs in a round starting at `now`; the sources named are taken as run.
    pub fn round(&mut self, now: Instant) -> Round {
        let due = |last: Option<Instant>, every: Duration| last.is_none_or(|t| now.duration_since(t) >= every);
        let full = now.duration_since(self.last_full) >= self.full_reconcile;
        if full {
            self.last_full = now;
        }
        let intune = self.intune.is_some_and(|every| due(self.last_intune, every));
        if intune {
            self.last_intune = Some(now);
        }
        let jamf = self.jamf.is_some_and(|every| due(self.last_jamf, every));
        if jamf {
            self.last_jamf = Some(now);
        }
        Round { full, intune, jamf }
    }

    /// The wait after a round: the interval plus `jitter_ms` (0..1000) thousandths of a tenth
    /// of it.
    pub fn pause(&self, jitter_ms: u64) -> Duration {
        self.interval + self.interval.mul_f64((jitter_ms.min(999) as f64 / 1000.0) * 0.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SyncSettings {
        SyncSettings {
            interval: Duration::from_secs(60),
            intune: true,
            intune_interval: Duration::from_secs(300),
            full_reconcile: Duration::from_secs(3600),
            page_size: 100,
            lease_ttl: Duration::from_secs(180),
            jamf_interval: Duration::from_secs(900),
            jamf_page_size: 100,
            share: crate::share::ShareSettings::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_source_runs_on_its_own_interval() {
        let start = Instant::now();
        let mut s = Schedule::new(&settings(), true, start);
        let mut log = Vec::new();
        // An hour and a bit of rounds, one a minute.
        for minute in 0..=61u64 {
            let r = s.round(start + Duration::from_secs(minute * 60));
            log.push((minute, r));
        }
        let minutes = |f: fn(&Round) -> bool| log.iter().filter(|(_, r)| f(r)).map(|(m, _)| *m).collect::<Vec<_>>();
        assert_eq!(
            minutes(|r| r.intune),
            vec![0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60]
        );
        assert_eq!(minutes(|r| r.jamf), vec![0, 15, 30, 45, 60]);
        assert_eq!(
            minutes(|r| r.full),
            vec![60],
            "the first round resumes; a full one each hour"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sources_that_are_off_never_run_and_late_rounds_catch_up_once() {
        let mut off = settings();
        off.intune = false;
        let start = Instant::now();
        let mut s = Schedule::new(&off, false, start);
        for minute in 0..120u64 {
            let r = s.round(start + Duration::from_secs(minute * 60));
            assert!(!r.intune && !r.jamf, "minute {minute}: {r:?}");
        }
        // A node that was paused for hours runs each due source once, not once per missed slot.
        let mut s = Schedule::new(&settings(), true, start);
        s.round(start);
        let late = start + Duration::from_secs(5 * 3600);
        assert_eq!(
            s.round(late),
            Round {
                full: true,
                intune: true,
                jamf: true
            }
        );
        assert_eq!(
            s.round(late + Duration::from_secs(60)),
            Round {
                full: false,
                intune: false,
                jamf: false
            }
        );
    }

    #[test]
    fn pauses_are_the_interval_plus_at_most_ten_percent() {
        let s = Schedule::new(&settings(), true, Instant::now());
        assert_eq!(s.pause(0), Duration::from_secs(60));
        assert_eq!(s.pause(500), Duration::from_secs(63));
        assert!(s.pause(999) < Duration::from_secs(66));
        assert!(s.pause(u64::MAX) < Duration::from_secs(66));
    }
}
