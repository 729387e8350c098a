//! [`Deadline`]: any store with every call bounded in time. A database that stops answering
//! without closing the connection (a black-holed network, a frozen server) would otherwise
//! hang a call until TCP gives up, minutes later; past the deadline the call fails with
//! [`StoreError::Timeout`], which callers treat as the store being away.
//!
//! Dropping a timed-out call is safe: sqlx rolls an unfinished transaction back, and a
//! connection cut mid-statement is discarded rather than reused.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::*;

/// `inner` with each call bounded by `limit`.
pub struct Deadline {
    inner: Arc<dyn Store>,
    limit: Duration,
}

impl Deadline {
    pub fn new(inner: Arc<dyn Store>, limit: Duration) -> Self {
        Self { inner, limit }
    }

    async fn within<T>(&self, call: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.limit, call)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.limit)))
    }
}

/// Implements `$trait` for [`Deadline`], forwarding each listed method to `inner` within the
/// deadline; the tokens after the list go into the impl as they are. (The whole impl comes from
/// the macro so that `async_trait` sees the expanded methods.)
macro_rules! bounded {
    ($trait:ident { $( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )* } $($rest:tt)*) => {
        #[async_trait]
        impl $trait for Deadline {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    self.within(self.inner.$name($($arg),*)).await
                }
            )*
            $($rest)*
        }
    };
}

bounded! {
    PostureStore {
            fn device_evidence(&self, device_id: &str) -> DeviceEvidence;
            fn computers_for_user(&self, object_id: &str, username: Option<&str>) -> Vec<Computer>;
            fn computer(&self, jamf_id: &str) -> Option<Computer>;
            fn computer_by_serial(&self, serial: &str) -> Option<Computer>;
            fn computers(&self, after: Option<&str>, limit: u32) -> Vec<Computer>;
            fn changes_since(&self, after: i64, limit: u32) -> Vec<(i64, String)>;
            fn latest_change(&self) -> i64;
            fn oldest_change(&self) -> i64;
            fn epoch(&self) -> String;
    }

    fn change_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.change_signal()
    }
}

bounded! {
    InventoryWriter {
            fn upsert_entra_devices(&self, devices: &[EntraDevice]) -> ();
            fn remove_entra_device(&self, object_id: &str, purge: bool) -> Option<String>;
            fn upsert_managed_devices(&self, devices: &[ManagedDevice]) -> ();
            fn upsert_computers(&self, computers: &[Computer]) -> ();
            fn remove_computer(&self, jamf_id: &str) -> ();
    }
}

bounded! {
    SyncState {
            fn cursor(&self, source: &str) -> Option<String>;
            fn set_cursor(&self, source: &str, cursor: Option<&str>) -> ();
            fn record_run(&self, run: &SyncRun) -> ();
            fn last_runs(&self, source: &str, limit: u32) -> Vec<SyncRun>;
            fn last_success(&self) -> SourceTimes;
            fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Option<Lease>;
            fn lease_holder(&self, name: &str) -> Option<(Lease, i64)>;
            fn sweep_entra(&self, before: i64) -> Vec<String>;
            fn sweep_managed(&self, before: i64) -> u64;
    }

    fn fenced(&self, lease: &Lease) -> Arc<dyn Store> {
        Arc::new(Self::new(self.inner.fenced(lease), self.limit))
    }
}

bounded! {
    SettingsStore {
            fn setting(&self, key: &str) -> Option<(String, i64)>;
            fn put_setting(&self, key: &str, value: &str, expected: Option<i64>) -> i64;
    }
}

bounded! {
    HistoryStore {
            fn record_send(&self, entry: &HistoryEntry) -> ();
            fn history(&self, jamf_id: &str, limit: u32) -> Vec<HistoryEntry>;
    }
}

bounded! {
    AuditStore {
            fn record_audit(&self, actor: &str, action: &str, detail: &str) -> i64;
            fn audit_log(&self, before: Option<i64>, limit: u32) -> Vec<AuditEntry>;
    }
}

bounded! {
    JobStore {
            fn put_job(&self, job: &Job) -> ();
            fn start_job(&self, job: &Job) -> Option<Job>;
            fn job(&self, id: &str) -> Option<Job>;
            fn running_job(&self, kind: &str, computer: Option<&str>) -> Option<Job>;
            fn interrupt_jobs(&self, node: &str, started_by: i64, now: i64) -> u64;
    }
}

bounded! {
    SessionRows {
            fn session(&self, id: &str, now: i64) -> Option<String>;
            fn put_session(&self, id: &str, data: &str, expires_at: i64) -> ();
            fn remove_session(&self, id: &str) -> ();
            fn replace_session(&self, id: &str, expected: &str, data: &str, expires_at: i64) -> bool;
            fn claim_session_renewal(&self, id: &str, claimant: &str, ttl_secs: i64) -> bool;
            fn release_session_renewal(&self, id: &str, claimant: &str) -> ();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose every call never answers.
    struct Frozen;

    macro_rules! frozen {
        ($trait:ident { $( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )* } $($rest:tt)*) => {
            #[async_trait]
            impl $trait for Frozen {
                $( async fn $name(&self $(, _: $ty)*) -> Result<$ret, StoreError> { std::future::pending().await } )*
                $($rest)*
            }
        };
    }

    frozen! {
        PostureStore {
                fn device_evidence(&self, a: &str) -> DeviceEvidence;
                fn computers_for_user(&self, a: &str, b: Option<&str>) -> Vec<Computer>;
                fn computer(&self, a: &str) -> Option<Computer>;
                fn computer_by_serial(&self, a: &str) -> Option<Computer>;
                fn computers(&self, a: Option<&str>, b: u32) -> Vec<Computer>;
                fn changes_since(&self, a: i64, b: u32) -> Vec<(i64, String)>;
                fn latest_change(&self) -> i64;
                fn oldest_change(&self) -> i64;
                fn epoch(&self) -> String;
        }
    }
    frozen! {
        InventoryWriter {
                fn upsert_entra_devices(&self, a: &[EntraDevice]) -> ();
                fn remove_entra_device(&self, a: &str, b: bool) -> Option<String>;
                fn upsert_managed_devices(&self, a: &[ManagedDevice]) -> ();
                fn upsert_computers(&self, a: &[Computer]) -> ();
                fn remove_computer(&self, a: &str) -> ();
        }
    }
    frozen! {
        SyncState {
                fn cursor(&self, a: &str) -> Option<String>;
                fn set_cursor(&self, a: &str, b: Option<&str>) -> ();
                fn record_run(&self, a: &SyncRun) -> ();
                fn last_runs(&self, a: &str, b: u32) -> Vec<SyncRun>;
                fn last_success(&self) -> SourceTimes;
                fn try_lease(&self, a: &str, b: &str, c: i64) -> Option<Lease>;
            fn lease_holder(&self, a: &str) -> Option<(Lease, i64)>;
                fn sweep_entra(&self, a: i64) -> Vec<String>;
                fn sweep_managed(&self, a: i64) -> u64;
        }
        fn fenced(&self, _: &Lease) -> Arc<dyn Store> {
            Arc::new(Frozen)
        }
    }
    frozen! {
        SettingsStore {
                fn setting(&self, a: &str) -> Option<(String, i64)>;
                fn put_setting(&self, a: &str, b: &str, c: Option<i64>) -> i64;
        }
    }
    frozen! {
        HistoryStore {
                fn record_send(&self, a: &HistoryEntry) -> ();
                fn history(&self, a: &str, b: u32) -> Vec<HistoryEntry>;
        }
    }
    frozen! {
        AuditStore {
                fn record_audit(&self, a: &str, b: &str, c: &str) -> i64;
                fn audit_log(&self, a: Option<i64>, b: u32) -> Vec<AuditEntry>;
        }
    }
    frozen! {
        JobStore {
                fn put_job(&self, a: &Job) -> ();
                fn start_job(&self, a: &Job) -> Option<Job>;
                fn job(&self, a: &str) -> Option<Job>;
                fn running_job(&self, a: &str, b: Option<&str>) -> Option<Job>;
                fn interrupt_jobs(&self, a: &str, b: i64, c: i64) -> u64;
        }
    }
    frozen! {
        SessionRows {
                fn session(&self, a: &str, b: i64) -> Option<String>;
                fn put_session(&self, a: &str, b: &str, c: i64) -> ();
                fn remove_session(&self, a: &str) -> ();
                fn replace_session(&self, a: &str, b: &str, c: &str, d: i64) -> bool;
                fn claim_session_renewal(&self, a: &str, b: &str, c: i64) -> bool;
                fn release_session_renewal(&self, a: &str, b: &str) -> ();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_call_of_a_store_that_never_answers_times_out() {
        let limit = Duration::from_secs(10);
        let s = Deadline::new(Arc::new(Frozen), limit);
        let timed_out = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Timeout(d)) if d == limit);
        assert!(timed_out(s.device_evidence("d").await.map(drop)));
        assert!(timed_out(s.put_setting("k", "v", None).await.map(drop)));
        assert!(timed_out(s.session("s", 0).await.map(drop)));
        assert!(timed_out(
            s.put_job(&Job {
                id: "j".into(),
                kind: "send_update".into(),
                status: JobStatus::Running,
                node: "n".into(),
                started_at: 0,
                finished_at: None,
                computer: None,
                result: None,
            })
            .await
        ));
        let lease = Lease {
            name: "sync".into(),
            holder: "n".into(),
            term: 1,
        };
        let fenced = s.fenced(&lease);
        assert!(
            timed_out(fenced.upsert_computers(&[]).await),
            "a fenced view keeps the deadline"
        );
        let started = tokio::time::Instant::now();
        assert!(timed_out(s.record_audit("a", "b", "c").await.map(drop)));
        assert_eq!(started.elapsed(), limit, "no sooner, no later");
    }
}
