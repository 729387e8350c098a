//! The behaviour every store backend must show, as one suite: `run(&store).await` panics with
//! a message at the first divergence. SQLite runs it in its unit tests; PostgreSQL runs the
//! same suite.

use super::*;

fn entra(device: &str, object: &str, compliant: bool, seen_at: i64) -> EntraDevice {
    EntraDevice {
        device_id: device.into(),
        object_id: object.into(),
        display_name: Some(format!("Mac {device}")),
        account_enabled: Some(true),
        is_compliant: Some(compliant),
        is_managed: Some(true),
        trust_type: Some("Workplace".into()),
        operating_system: Some("MacMDM".into()),
        os_version: Some("14.5".into()),
        compliance_expiration: None,
        last_sign_in: Some(seen_at - 60),
        removed: false,
        seen_at,
    }
}

fn computer(jamf_id: &str, serial: &str, device: Option<&str>, user_oid: &str, username: &str) -> Computer {
    Computer {
        jamf_id: jamf_id.into(),
        udid: Some(format!("UDID-{jamf_id}")),
        serial: Some(serial.into()),
        name: Some(format!("{username}'s Mac")),
        model: Some("MacBook Pro".into()),
        os_version: Some("14.5".into()),
        os_build: Some("23F79".into()),
        managed: true,
        filevault: Some("ALL_ENCRYPTED".into()),
        last_inventory: Some(1_700_000_000),
        last_contact: Some(1_700_000_100),
        seen_at: 1_700_000_200,
        accounts: vec![LocalAccount {
            username: username.into(),
            account_type: AccountType::Local,
            entra_user_id: Some(user_oid.into()),
            entra_device_id: device.map(str::to_string),
            registration: if device.is_some() {
                RegistrationState::Activated
            } else {
                RegistrationState::Unknown
            },
        }],
    }
}

/// Runs every check against `store`, which must be empty.
pub async fn run<S: Store + ?Sized>(store: &S) {
    devices(store).await;
    computers_and_evidence(store).await;
    sync_state(store).await;
    settings(store).await;
    history_and_audit(store).await;
    sessions(store).await;
    jobs(store).await;
}

async fn devices<S: Store + ?Sized>(s: &S) {
    assert_eq!(s.latest_change().await.unwrap(), 0);
    assert_eq!(
        s.device_evidence("nope").await.unwrap(),
        DeviceEvidence::default(),
        "unknown device: no evidence"
    );
    s.upsert_entra_devices(&[entra("DEV-A", "obj-a", true, 100), entra("dev-b", "obj-b", false, 100)])
        .await
        .unwrap();
    let a = s
        .device_evidence("dev-a")
        .await
        .unwrap()
        .entra
        .expect("device ids are case-insensitive");
    assert_eq!(a.is_compliant, Some(true));
    // Upsert replaces; replays are harmless.
    let mut changed = entra("dev-a", "obj-a", false, 200);
    changed.account_enabled = Some(false);
    s.upsert_entra_devices(&[changed.clone(), changed.clone()])
        .await
        .unwrap();
    assert_eq!(s.device_evidence("dev-a").await.unwrap().entra, Some(changed));
    // Soft removal keeps the row, marked; purge deletes it.
    assert_eq!(
        s.remove_entra_device("obj-a", false).await.unwrap().as_deref(),
        Some("dev-a")
    );
    assert!(s.device_evidence("dev-a").await.unwrap().entra.unwrap().removed);
    assert_eq!(
        s.remove_entra_device("obj-b", true).await.unwrap().as_deref(),
        Some("dev-b")
    );
    assert!(s.device_evidence("dev-b").await.unwrap().entra.is_none());
    assert_eq!(s.remove_entra_device("obj-unknown", true).await.unwrap(), None);
    // Intune enrichment joins on azureADDeviceId.
    let md = ManagedDevice {
        intune_id: "intune-1".into(),
        azure_ad_device_id: Some("DEV-A".into()),
        compliance_state: ComplianceState::InGracePeriod,
        grace_end: Some(5_000),
        management_agent: Some("jamf".into()),
        last_sync: Some(150),
        serial: Some("C02A".into()),
        upn: Some("alice@contoso.test".into()),
        seen_at: 200,
    };
    let before = s.latest_change().await.unwrap();
    s.upsert_managed_devices(std::slice::from_ref(&md)).await.unwrap();
    let changes = s.changes_since(before, 10).await.unwrap();
    assert_eq!(
        changes.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>(),
        vec!["dev-a"],
        "writes log the device"
    );
    assert_eq!(
        s.device_evidence("dev-a")
            .await
            .unwrap()
            .intune
            .unwrap()
            .compliance_state,
        ComplianceState::InGracePeriod
    );
}

async fn computers_and_evidence<S: Store + ?Sized>(s: &S) {
    let c1 = computer("1", "C02A", Some("dev-a"), "user-alice", "alice");
    let c2 = computer("2", "C02C", None, "user-carol", "carol");
    s.upsert_computers(&[c1.clone(), c2.clone()]).await.unwrap();
    assert_eq!(s.computer("1").await.unwrap(), Some(c1.clone()));
    assert_eq!(
        s.computer_by_serial("C02C").await.unwrap().map(|c| c.jamf_id),
        Some("2".into())
    );
    let (jc, acct) = s
        .device_evidence("dev-a")
        .await
        .unwrap()
        .jamf
        .expect("Jamf joins on the Entra device id");
    assert_eq!((jc.jamf_id.as_str(), acct.username.as_str()), ("1", "alice"));
    assert_eq!(
        s.computers_for_user("USER-CAROL", None).await.unwrap().len(),
        1,
        "by object id"
    );
    assert_eq!(
        s.computers_for_user("unknown", Some("Carol")).await.unwrap().len(),
        1,
        "by username"
    );
    // Accounts are replaced with the computer.
    let mut c1b = c1.clone();
    c1b.accounts[0].registration = RegistrationState::Deactivated;
    s.upsert_computers(&[c1b.clone()]).await.unwrap();
    assert_eq!(
        s.computer("1").await.unwrap().unwrap().accounts[0].registration,
        RegistrationState::Deactivated
    );
    let page1 = s.computers(None, 1).await.unwrap();
    let page2 = s.computers(Some(&page1[0].jamf_id), 10).await.unwrap();
    assert_eq!((page1.len(), page2.len()), (1, 1), "keyset pagination");
    let before = s.latest_change().await.unwrap();
    s.remove_computer("1").await.unwrap();
    let changes = s.changes_since(before, 10).await.unwrap();
    assert!(
        changes.iter().any(|(_, d)| d == "dev-a"),
        "removing a computer changes its device: {changes:?}"
    );
    s.upsert_computers(&[c1b]).await.unwrap();
    s.remove_computer("2").await.unwrap();
    assert!(s.computer("2").await.unwrap().is_none());
    // Sweeps after a full round: rows not seen since mark as removed / go.
    s.upsert_entra_devices(&[
        entra("dev-old", "obj-old", true, 50),
        entra("dev-new", "obj-new", true, 500),
    ])
    .await
    .unwrap();
    let swept = s.sweep_entra(100).await.unwrap();
    assert!(
        swept.contains(&"dev-old".to_string()) && !swept.contains(&"dev-new".to_string()),
        "{swept:?}"
    );
    assert!(s.device_evidence("dev-old").await.unwrap().entra.unwrap().removed);
    assert_eq!(s.sweep_managed(1_000).await.unwrap(), 1);
}

async fn sync_state<S: Store + ?Sized>(s: &S) {
    assert_eq!(s.cursor("entra").await.unwrap(), None);
    s.set_cursor("entra", Some("https://graph/delta?token=1"))
        .await
        .unwrap();
    s.set_cursor("entra", Some("https://graph/delta?token=2"))
        .await
        .unwrap();
    assert_eq!(
        s.cursor("entra").await.unwrap().as_deref(),
        Some("https://graph/delta?token=2")
    );
    s.set_cursor("entra", None).await.unwrap();
    assert_eq!(s.cursor("entra").await.unwrap(), None);
    let run = |ok: bool, at: i64| SyncRun {
        source: "entra".into(),
        finished_at: at,
        ok,
        error: (!ok).then(|| "boom".into()),
        detail: "{}".into(),
    };
    let a = s
        .try_lease("sync", "node-a", 60)
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert_eq!((a.holder.as_str(), a.term), ("node-a", 1));
    let renewed = s
        .try_lease("sync", "node-a", 60)
        .await
        .unwrap()
        .expect("the holder renews");
    assert_eq!(renewed.term, 1, "a renewal keeps the term");
    assert_eq!(
        s.try_lease("sync", "node-b", 60).await.unwrap(),
        None,
        "another node waits"
    );
    assert!(s.try_lease("other", "node-b", 60).await.unwrap().is_some());
    let (held, left) = s.lease_holder("sync").await.unwrap().expect("node-a holds sync");
    assert_eq!((held.holder.as_str(), held.term), ("node-a", 1));
    assert!((55..=60).contains(&left), "{left} s left of 60");
    assert_eq!(s.lease_holder("nobody").await.unwrap(), None);
    let old = s.try_lease("expired", "node-a", -1).await.unwrap().unwrap();
    assert_eq!(
        s.lease_holder("expired").await.unwrap(),
        None,
        "an expired lease is nobody's"
    );
    let new = s
        .try_lease("expired", "node-b", 60)
        .await
        .unwrap()
        .expect("an expired lease can be taken");
    assert_eq!(
        (new.holder.as_str(), new.term),
        ("node-b", old.term + 1),
        "a takeover starts a new term"
    );
    fencing(s, &old, &new).await;
    s.record_run(&run(true, 10)).await.unwrap();
    s.record_run(&run(false, 20)).await.unwrap();
    assert_eq!(s.last_success().await.unwrap().entra, Some(10));
    assert_eq!(s.last_runs("entra", 1).await.unwrap()[0].error.as_deref(), Some("boom"));
    // Old runs are pruned, but never the last successful one: posture age rests on it.
    for i in 0..1010 {
        s.record_run(&run(false, 30 + i)).await.unwrap();
    }
    let kept = s.last_runs("entra", 5000).await.unwrap();
    assert!(kept.len() <= 1002, "{} runs kept", kept.len());
    assert!(kept.len() >= 1000, "{} runs kept", kept.len());
    assert_eq!(s.last_success().await.unwrap().entra, Some(10));
    assert_eq!(s.last_success().await.unwrap().jamf, None);
}

/// Writes fenced by a term that is over are refused, and nothing of them lands; the new
/// holder's fenced writes and unfenced writes go through.
async fn fencing<S: Store + ?Sized>(s: &S, old: &Lease, new: &Lease) {
    let stale = s.fenced(old);
    let current = s.fenced(new);
    let refused = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Fenced { term, .. }) => assert_eq!(term, old.term, "{what}"),
        other => panic!("{what}: a write from an old term must be refused, got {other:?}"),
    };
    let d = "f0000000-0000-4000-8000-000000000001";
    refused(
        stale.upsert_entra_devices(&[entra(d, "o-fenced", true, 1)]).await,
        "upsert",
    );
    refused(stale.set_cursor("fenced", Some("x")).await, "cursor");
    refused(
        stale
            .record_run(&SyncRun {
                source: "fenced".into(),
                finished_at: 1,
                ok: true,
                error: None,
                detail: "{}".into(),
            })
            .await,
        "run",
    );
    refused(stale.sweep_entra(i64::MAX).await.map(|_| ()), "sweep");
    assert!(
        s.device_evidence(d).await.unwrap().entra.is_none(),
        "nothing of the refused write landed"
    );
    assert_eq!(s.cursor("fenced").await.unwrap(), None);
    current.set_cursor("fenced", Some("y")).await.unwrap();
    assert_eq!(
        s.cursor("fenced").await.unwrap().as_deref(),
        Some("y"),
        "the holder's fenced write lands"
    );
    current.set_cursor("fenced", None).await.unwrap();
}

async fn settings<S: Store + ?Sized>(s: &S) {
    assert_eq!(s.setting("ca").await.unwrap(), None);
    assert_eq!(s.put_setting("ca", r#"{"enabled":true}"#, None).await.unwrap(), 1);
    assert!(matches!(
        s.put_setting("ca", r#"{"enabled":false}"#, None).await,
        Err(StoreError::Conflict { current: 1, .. })
    ));
    assert_eq!(s.put_setting("ca", r#"{"enabled":false}"#, Some(1)).await.unwrap(), 2);
    assert!(matches!(
        s.put_setting("ca", "{}", Some(1)).await,
        Err(StoreError::Conflict { current: 2, .. })
    ));
    assert_eq!(s.setting("ca").await.unwrap(), Some((r#"{"enabled":false}"#.into(), 2)));
}

async fn history_and_audit<S: Store + ?Sized>(s: &S) {
    for (i, user) in ["alice", "bob", "alice"].iter().enumerate() {
        s.record_send(&HistoryEntry {
            jamf_id: "1".into(),
            username: user.to_string(),
            entra_device_id: Some("dev-a".into()),
            sent_at: 100 + i as i64,
            payload: format!(r#"{{"n":{i}}}"#),
            result: "ok".into(),
        })
        .await
        .unwrap();
    }
    let h = s.history("1", 10).await.unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[0].sent_at, 102, "newest first");
    let a1 = s
        .record_audit("admin", "settings.put", r#"{"secret":"***"}"#)
        .await
        .unwrap();
    let a2 = s.record_audit("admin", "send_update", "{}").await.unwrap();
    let log = s.audit_log(None, 10).await.unwrap();
    assert_eq!(log.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a2, a1]);
    assert_eq!(s.audit_log(Some(a2), 10).await.unwrap().len(), 1, "paging by id");
}

async fn sessions<S: Store + ?Sized>(s: &S) {
    let now = base::time::unix_now_i64();
    s.put_session("s1", "{}", now + 100).await.unwrap();
    assert_eq!(s.session("s1", now).await.unwrap().as_deref(), Some("{}"));
    assert_eq!(
        s.session("s1", now + 100).await.unwrap(),
        None,
        "expired sessions are gone"
    );
    s.put_session("s9", "old", now + 100).await.unwrap();
    assert!(s.replace_session("s9", "old", "touched", now + 100).await.unwrap());
    assert!(
        !s.replace_session("s9", "old", "stale", now + 100).await.unwrap(),
        "only over the data as read"
    );
    assert_eq!(s.session("s9", now).await.unwrap().as_deref(), Some("touched"));
    s.remove_session("s1").await.unwrap();
    assert_eq!(s.session("s1", 0).await.unwrap(), None);
    assert!(s.claim_session_renewal("s1", "req-a", 30).await.unwrap());
    assert!(
        !s.claim_session_renewal("s1", "req-b", 30).await.unwrap(),
        "one claim at a time"
    );
    assert!(s.claim_session_renewal("s2", "req-b", 30).await.unwrap());
    assert!(s.claim_session_renewal("s3", "req-c", -1).await.unwrap());
    assert!(
        s.claim_session_renewal("s3", "req-d", 30).await.unwrap(),
        "an expired claim can be taken"
    );
    s.release_session_renewal("s1", "req-b").await.unwrap();
    assert!(
        !s.claim_session_renewal("s1", "req-e", 30).await.unwrap(),
        "only the claimant releases"
    );
    s.release_session_renewal("s1", "req-a").await.unwrap();
    assert!(s.claim_session_renewal("s1", "req-e", 30).await.unwrap(), "released");
}

async fn jobs<S: Store + ?Sized>(s: &S) {
    let now = base::time::unix_now_i64();
    let job = |id: &str, node: &str, started_at: i64, computer: &str| Job {
        id: id.into(),
        kind: "send_update".into(),
        status: JobStatus::Running,
        node: node.into(),
        started_at,
        finished_at: None,
        computer: Some(computer.into()),
        result: None,
    };
    assert_eq!(s.job("j1").await.unwrap(), None);
    let old = Job {
        status: JobStatus::Succeeded,
        ..job("old", "gw-1", now - JOB_RETENTION_SECS - 10, "7")
    };
    s.put_job(&old).await.unwrap();
    assert_eq!(
        s.start_job(&job("j1", "gw-1", now, "7")).await.unwrap(),
        None,
        "started"
    );
    assert_eq!(s.job("j1").await.unwrap(), Some(job("j1", "gw-1", now, "7")));
    assert_eq!(s.job("old").await.unwrap(), None, "jobs past the retention are dropped");
    // The same work, asked of another node: the running job, not a second one.
    assert_eq!(
        s.start_job(&job("j2", "gw-2", now + 1, "7")).await.unwrap(),
        Some(job("j1", "gw-1", now, "7"))
    );
    assert_eq!(s.job("j2").await.unwrap(), None, "not stored");
    assert_eq!(
        s.start_job(&job("j2", "gw-2", now, "8")).await.unwrap(),
        None,
        "other work"
    );
    assert_eq!(s.start_job(&job("j3", "gw-1", now, "9")).await.unwrap(), None);
    let done = Job {
        status: JobStatus::Succeeded,
        finished_at: Some(now + 3),
        result: Some(r#"{"sent":4}"#.into()),
        ..job("j1", "gw-1", now, "7")
    };
    s.put_job(&done).await.unwrap();
    assert_eq!(
        s.job("j1").await.unwrap(),
        Some(done.clone()),
        "a finished job replaces the running one"
    );
    assert_eq!(
        s.start_job(&job("j5", "gw-2", now + 4, "7")).await.unwrap(),
        None,
        "once it finished, the same work starts again"
    );
    s.put_job(&Job {
        status: JobStatus::Failed,
        finished_at: Some(now + 4),
        ..job("j5", "gw-2", now + 4, "7")
    })
    .await
    .unwrap();
    assert_eq!(
        s.interrupt_jobs("gw-1", now - 1, now + 5).await.unwrap(),
        0,
        "a job started after the time given is not the old process's"
    );
    assert_eq!(
        s.interrupt_jobs("gw-1", now, now + 5).await.unwrap(),
        1,
        "only gw-1's running job"
    );
    let j3 = s.job("j3").await.unwrap().unwrap();
    assert_eq!((j3.status, j3.finished_at), (JobStatus::Interrupted, Some(now + 5)));
    assert_eq!(
        s.job("j2").await.unwrap().unwrap().status,
        JobStatus::Running,
        "other nodes' jobs untouched"
    );
    assert_eq!(s.job("j1").await.unwrap(), Some(done), "finished jobs untouched");
    // The running job for the same work, whichever node runs it.
    let j2 = s.job("j2").await.unwrap();
    assert_eq!(s.running_job("send_update", Some("8")).await.unwrap(), j2);
    assert_eq!(s.running_job("send_update", Some("7")).await.unwrap(), None);
    assert_eq!(s.running_job("sync", Some("8")).await.unwrap(), None);
    assert_eq!(
        s.running_job("send_update", None).await.unwrap(),
        None,
        "a job for one computer is not one for all"
    );
    let all = Job {
        computer: None,
        ..job("j4", "gw-2", now + 1, "")
    };
    assert_eq!(s.start_job(&all).await.unwrap(), None);
    assert_eq!(s.running_job("send_update", None).await.unwrap(), Some(all.clone()));
    assert_eq!(
        s.start_job(&Job {
            id: "j6".into(),
            ..all.clone()
        })
        .await
        .unwrap(),
        Some(all),
        "every computer, too: one at a time"
    );
    // Simultaneous requests for the same work on several nodes start exactly one job.
    let racers: Vec<Job> = (0..8)
        .map(|i| job(&format!("race-{i}"), &format!("gw-{i}"), now + 10, "race"))
        .collect();
    let r = &racers;
    let results = {
        let (a, b, c, d, e, f, g, h) = tokio::join!(
            s.start_job(&r[0]),
            s.start_job(&r[1]),
            s.start_job(&r[2]),
            s.start_job(&r[3]),
            s.start_job(&r[4]),
            s.start_job(&r[5]),
            s.start_job(&r[6]),
            s.start_job(&r[7]),
        );
        [a, b, c, d, e, f, g, h]
    };
    let started = results.iter().filter(|r| matches!(r, Ok(None))).count();
    assert_eq!(started, 1, "{results:?}");
    let winner = s.running_job("send_update", Some("race")).await.unwrap().unwrap();
    for r in results {
        if let Some(running) = r.unwrap() {
            assert_eq!(running, winner, "the losers are given the winner");
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn sqlite_in_memory_passes() {
        let s = super::super::sqlite::SqliteStore::in_memory().await.unwrap();
        super::run(&s).await;
    }

    /// Writers on several pooled connections at once (the sync loop, the admin API, sessions)
    /// must wait for each other, never fail with "database is locked": a deferred
    /// transaction that read before another connection committed cannot upgrade to a write
    /// and gets SQLITE_BUSY at once, without the busy timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_file_concurrent_writers_wait_instead_of_failing() {
        use super::super::{model::SyncRun, SettingsStore, StoreError, SyncState};
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::sqlite::SqliteStore::open(&dir.path().join("c.db"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..8i64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..40i64 {
                    let run = SyncRun {
                        source: format!("s{}", t % 3),
                        finished_at: t * 1000 + i,
                        ok: i % 2 == 0,
                        error: None,
                        detail: "{}".into(),
                    };
                    s.record_run(&run).await.map_err(|e| format!("record_run: {e}"))?;
                    // Optimistic settings writes: a conflict is an answer, a lock error is not.
                    let key = format!("k{}", t % 2);
                    let current = s.setting(&key).await.map_err(|e| format!("setting: {e}"))?;
                    match s.put_setting(&key, "{}", current.map(|(_, v)| v)).await {
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(format!("put_setting: {e}")),
                    }
                }
                Ok::<(), String>(())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn sqlite_file_passes_and_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let s = super::super::sqlite::SqliteStore::open(&path).await.unwrap();
        super::run(&s).await;
        assert!(s.schema_version().await.unwrap() >= 1);
        s.close().await;
        let s = super::super::sqlite::SqliteStore::open(&path).await.unwrap();
        use super::super::PostureStore;
        assert!(s.computer("1").await.unwrap().is_some(), "data survives a reopen");
    }

    async fn pg() -> super::super::postgres::PgStore {
        let (settings, _) = super::super::postgres::testing::fresh_schema()
            .await
            .expect("PostgreSQL for the tests (PORTCULLIS_TEST_POSTGRES)");
        super::super::postgres::PgStore::open(&settings).await.unwrap()
    }

    #[tokio::test]
    async fn postgres_passes() {
        let s = pg().await;
        super::run(&s).await;
        assert!(s.schema_version().await.unwrap() >= 1);
    }

    /// Change ids are handed out before commit; without the change-log lock a follower reading
    /// `id > cursor` would skip a transaction that took an id first and committed last. Eight
    /// writers append concurrently while a follower pages through the log: it must see every
    /// id, none skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_change_ids_commit_in_order_so_followers_skip_nothing() {
        use super::super::{InventoryWriter, PostureStore};
        let s = pg().await;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let s = s.clone();
                tokio::spawn(async move {
                    for i in 0..40 {
                        let d = format!("d{w:07}-0000-4000-8000-{i:012}");
                        s.upsert_entra_devices(&[super::entra(&d, &format!("o-{d}"), i % 2 == 0, 1)])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let follower = {
            let (s, done) = (s.clone(), done.clone());
            tokio::spawn(async move {
                let (mut cursor, mut seen) = (0i64, Vec::new());
                loop {
                    // Read whether the writers are done before the page, so the last page read
                    // comes after every commit.
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let page = s.changes_since(cursor, 1000).await.unwrap();
                    for (id, _) in &page {
                        seen.push(*id);
                        cursor = *id;
                    }
                    if finished && page.is_empty() {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        for w in writers {
            w.await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = follower.await.unwrap();
        let all = s.changes_since(0, 10_000).await.unwrap();
        assert_eq!(all.len(), 320);
        assert_eq!(seen.len(), all.len(), "a follower skipped a late commit");
        assert_eq!(seen, all.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    }

    /// Two nodes saving the same settings version at once: one wins, the other gets a conflict
    /// naming the new version; nothing is lost or overwritten.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_concurrent_settings_saves_conflict_instead_of_overwriting() {
        use super::super::{SettingsStore, StoreError};
        let s = pg().await;
        for round in 0..20 {
            let expected = s.setting("k").await.unwrap().map(|(_, v)| v);
            let (va, vb) = (format!("a{round}"), format!("b{round}"));
            let (a, b) = tokio::join!(s.put_setting("k", &va, expected), s.put_setting("k", &vb, expected));
            assert_eq!(
                u8::from(a.is_ok()) + u8::from(b.is_ok()),
                1,
                "round {round}: {a:?} {b:?}"
            );
            let lost = if a.is_ok() { &b } else { &a };
            assert!(
                matches!(lost, Err(StoreError::Conflict { current, .. }) if Some(*current) == expected.map(|v| v + 1).or(Some(1))),
                "{lost:?}"
            );
        }
    }
}
