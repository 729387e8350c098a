//! The sync loop against the emulated Microsoft Graph over real HTTP, into a real SQLite store:
//! first sync and deltas, removals, expired tokens, throttling and server errors, malformed
//! pages, interruption and resumption, Intune enrichment, and a flip enforced end to end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::emulator::personas;
use portcullis::identity::app_token::AppTokens;
use portcullis::identity::credential::ClientCredential;
use portcullis::store::sqlite::SqliteStore;
use portcullis::store::*;
use portcullis::sync::graph::{GraphClient, RetryPolicy};
use portcullis::sync::{entra, intune, SyncError};
use serde_json::{json, Value};

use crate::harness::{client, poll_until, pool, Emulator, Gateway, Upstream};

const ALICE_DEVICE: &str = "d1000000-0000-4000-8000-00000000000a";
const BOB_DEVICE: &str = "d1000000-0000-4000-8000-00000000000b";

fn graph(emu: &Emulator) -> GraphClient {
    graph_with(
        emu,
        personas::TENANT_ID,
        personas::GATEWAY_CLIENT_ID,
        personas::GATEWAY_CLIENT_SECRET,
    )
}

fn graph_with(emu: &Emulator, tenant: &str, client_id: &str, secret: &str) -> GraphClient {
    let cred = ClientCredential::load(&portcullis::config::ClientCredentialConfig::Secret(
        portcullis::config::Secret::new(secret),
    ))
    .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let tokens = Arc::new(AppTokens::new(
        &emu.url,
        tenant,
        client_id,
        &format!("{}/.default", emu.url),
        Some(Arc::new(cred)),
        http.clone(),
    ));
    let retry = RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(5),
    };
    GraphClient::new(&emu.url, tokens, http, retry, 1000)
}

async fn store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (SqliteStore::open(&dir.path().join("s.db")).await.unwrap(), dir)
}

async fn control(emu: &Emulator, path: &str, body: serde_json::Value) {
    let r = client()
        .post(format!("{}/_emulator/{path}", emu.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

async fn compliant(s: &SqliteStore, device: &str) -> Option<bool> {
    s.device_evidence(device)
        .await
        .unwrap()
        .entra
        .and_then(|d| d.is_compliant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_then_deltas_removals_and_expired_tokens() {
    let emu = Emulator::start().await;
    let g = graph(&emu);
    let (s, _d) = store().await;

    let first = entra::sync(&g, &s, 999).await.unwrap();
    assert!(first.full);
    assert_eq!(
        first.upserted, 4,
        "alice, bob, erin and olivia have registered Macs: {first:?}"
    );
    assert_eq!(compliant(&s, ALICE_DEVICE).await, Some(true));
    assert_eq!(compliant(&s, BOB_DEVICE).await, Some(false));
    assert!(s.cursor(entra::SOURCE).await.unwrap().unwrap().contains("$deltatoken="));

    // Nothing changed: an empty delta.
    let quiet = entra::sync(&g, &s, 999).await.unwrap();
    assert_eq!((quiet.full, quiet.upserted, quiet.removed), (false, 0, 0));

    // A newly registered device arrives with the next delta.
    control(
        &emu,
        "devices",
        json!({ "deviceId": "dd000000-0000-4000-8000-000000000001", "isCompliant": true }),
    )
    .await;
    assert_eq!(entra::sync(&g, &s, 999).await.unwrap().upserted, 1);
    assert_eq!(compliant(&s, "dd000000-0000-4000-8000-000000000001").await, Some(true));

    // bob fixes his Mac; the next delta carries only that.
    control(
        &emu,
        &format!("devices/{BOB_DEVICE}/compliance"),
        json!({ "isCompliant": true }),
    )
    .await;
    let delta = entra::sync(&g, &s, 999).await.unwrap();
    assert_eq!(delta.upserted, 1);
    assert_eq!(compliant(&s, BOB_DEVICE).await, Some(true));
    // A replayed delta (the same changes again) is harmless.
    let again = entra::sync(&g, &s, 999).await.unwrap();
    assert_eq!(again.upserted, 0);

    // Graph may send only the changed properties of an updated object: the sync re-reads the
    // whole device (GET /devices/{id}) and loses none of what it had.
    control(&emu, "settings", json!({ "partial_delta": true })).await;
    control(
        &emu,
        &format!("devices/{BOB_DEVICE}/compliance"),
        json!({ "isCompliant": false }),
    )
    .await;
    let partial = entra::sync(&g, &s, 999).await.unwrap();
    assert_eq!(partial.upserted, 1, "{partial:?}");
    assert_eq!(compliant(&s, BOB_DEVICE).await, Some(false));
    let bob = s.device_evidence(BOB_DEVICE).await.unwrap().entra.unwrap();
    assert!(
        bob.display_name.is_some() && bob.os_version.is_some() && !bob.removed,
        "{bob:?}"
    );
    control(&emu, "settings", json!({ "partial_delta": false })).await;
    control(
        &emu,
        &format!("devices/{BOB_DEVICE}/compliance"),
        json!({ "isCompliant": true }),
    )
    .await;
    assert_eq!(entra::sync(&g, &s, 999).await.unwrap().upserted, 1);

    // Removal: "changed" marks removed, "deleted" purges.
    control(
        &emu,
        &format!("devices/{BOB_DEVICE}/remove"),
        json!({ "reason": "changed" }),
    )
    .await;
    control(
        &emu,
        "devices/d1000000-0000-4000-8000-00000000000f/remove",
        json!({ "reason": "deleted" }),
    )
    .await;
    let removed = entra::sync(&g, &s, 999).await.unwrap();
    assert_eq!(removed.removed, 2);
    assert!(s.device_evidence(BOB_DEVICE).await.unwrap().entra.unwrap().removed);
    assert!(s
        .device_evidence("d1000000-0000-4000-8000-00000000000f")
        .await
        .unwrap()
        .entra
        .is_none());

    // The delta token expires: 410, then a full resync that also sweeps what vanished.
    control(&emu, "delta/expire", json!({})).await;
    let resync = entra::sync(&g, &s, 999).await.unwrap();
    assert!(resync.resynced_after_410 && resync.full, "{resync:?}");
    assert_eq!(resync.upserted, 3, "alice, erin and the new device remain");
    assert_eq!(compliant(&s, ALICE_DEVICE).await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_interrupted_by_errors_resumes_from_the_last_applied_page() {
    let emu = Emulator::start().await;
    control(&emu, "directory/seed", json!({ "devices": 96 })).await; // 100 devices with the personas
    let g = graph(&emu);
    let (s, _d) = store().await;
    // Two pages of ten go through, then Graph fails for longer than the retries last.
    emu.fault(json!({ "endpoint": "graph", "status": 500, "after": 2 }))
        .await;
    let r = entra::sync(&g, &s, 10).await;
    assert!(matches!(r, Err(SyncError::Graph(_))), "{r:?}");
    emu.clear_faults().await;
    let applied = s.changes_since(0, 10_000).await.unwrap().len() as u64;
    assert_eq!(applied, 20, "the two applied pages are stored");
    let cursor = s
        .cursor(entra::SOURCE)
        .await
        .unwrap()
        .expect("the cursor of the last applied page");
    assert!(cursor.contains("$skiptoken="), "a mid-round cursor: {cursor}");
    // Resume: the rest of the round, from the stored next link, each device once.
    let rest = entra::sync(&g, &s, 10).await.unwrap();
    assert!(!rest.full);
    assert_eq!(rest.pages, 8);
    assert_eq!(applied + rest.upserted, 100);
    assert!(s.cursor(entra::SOURCE).await.unwrap().unwrap().contains("$deltatoken="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried_and_malformed_pages_rejected() {
    let emu = Emulator::start().await;
    let g = graph(&emu);
    let (s, _d) = store().await;

    emu.fault(json!({ "endpoint": "graph", "status": 429, "count": 1, "retry_after": 1 }))
        .await;
    let started = Instant::now();
    entra::sync(&g, &s, 999).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured: {:?}",
        started.elapsed()
    );

    control(
        &emu,
        &format!("devices/{ALICE_DEVICE}/compliance"),
        json!({ "isCompliant": false }),
    )
    .await;
    emu.fault(json!({ "endpoint": "graph", "status": 503, "count": 2 }))
        .await;
    let r = entra::sync(&g, &s, 999).await.unwrap();
    assert_eq!(r.upserted, 1, "recovered after a 5xx storm");
    assert_eq!(compliant(&s, ALICE_DEVICE).await, Some(false));

    // More failures than retries: an error, nothing written, the cursor unchanged.
    let cursor = s.cursor(entra::SOURCE).await.unwrap();
    emu.fault(json!({ "endpoint": "graph", "status": 500 })).await;
    assert!(matches!(entra::sync(&g, &s, 999).await, Err(SyncError::Graph(_))));
    emu.clear_faults().await;

    control(
        &emu,
        &format!("devices/{ALICE_DEVICE}/compliance"),
        json!({ "isCompliant": true }),
    )
    .await;
    let before = s.latest_change().await.unwrap();
    emu.fault(json!({ "endpoint": "graph", "malformed": true, "count": 1 }))
        .await;
    let bad = entra::sync(&g, &s, 999).await;
    assert!(
        matches!(bad, Err(SyncError::Graph(_)) | Err(SyncError::Malformed(_))),
        "{bad:?}"
    );
    assert_eq!(
        s.latest_change().await.unwrap(),
        before,
        "a malformed page writes nothing"
    );
    assert_eq!(s.cursor(entra::SOURCE).await.unwrap(), cursor, "nor moves the cursor");
    assert_eq!(compliant(&s, ALICE_DEVICE).await, Some(false));
    // And the next run picks the change up.
    entra::sync(&g, &s, 999).await.unwrap();
    assert_eq!(compliant(&s, ALICE_DEVICE).await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intune_enrichment_and_missing_permission() {
    let emu = Emulator::start().await;
    let g = graph(&emu);
    let (s, _d) = store().await;
    let st = intune::sync(&g, &s).await.unwrap();
    assert_eq!(st.devices, 1);
    let erin = s
        .device_evidence("d1000000-0000-4000-8000-00000000000e")
        .await
        .unwrap()
        .intune
        .unwrap();
    assert_eq!(erin.compliance_state, ComplianceState::InGracePeriod);
    assert!(erin.grace_end.unwrap() > 0);
    emu.fault(json!({ "endpoint": "intune", "status": 403 })).await;
    let st = intune::sync(&g, &s).await.unwrap();
    assert!(st.not_permitted.is_some(), "403 is reported, not fatal");
    assert!(
        s.device_evidence("d1000000-0000-4000-8000-00000000000e")
            .await
            .unwrap()
            .intune
            .is_some(),
        "kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_device_is_enforced_within_one_interval() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("p.db");
    {
        // Jamf inventory comes from elsewhere (seeded); Entra comes from the sync.
        let s = SqliteStore::open(&path).await.unwrap();
        portcullis::demo::seed(&s, 0).await.unwrap();
        s.close().await;
    }
    let body = format!(
        "{}{}\n[store]\nsqlite_path = \"{}\"\n[device]\nchange_poll_interval = \"200ms\"\n[sync]\ninterval = \"1s\"\n\n[[routes]]\nupstream = \"app\"\n",
        emu.entra_section(""),
        pool("app", &[app.addr], ""),
        path.display()
    );
    let gw = Gateway::start(&body).await;
    let token = emu.token("persona=alice").await;
    let status = || async {
        client()
            .get(gw.url("/"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let status_is = |want: u16| {
        let status = &status;
        move || async move {
            match status().await {
                s if s == want => Ok(()),
                s => Err(s.to_string()),
            }
        }
    };
    // The fixture rows are ancient (synced at time 0); the sync makes them fresh.
    poll_until(
        "the first sync made alice's posture fresh",
        Duration::from_secs(10),
        status_is(200),
    )
    .await;
    control(
        &emu,
        &format!("devices/{ALICE_DEVICE}/compliance"),
        json!({ "isCompliant": false }),
    )
    .await;
    let (_, took) = poll_until("the flip reached enforcement", Duration::from_secs(10), status_is(403)).await;
    assert!(
        took < Duration::from_millis(2500),
        "one interval (1 s) plus the cache follower: took {took:?}"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"portcullis_sync_runs_total{result="ok",source="entra"}"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jamf_inventory_in_v1_and_v3_shapes() {
    use portcullis::emulator::jamf::{JAMF_CLIENT_ID, JAMF_CLIENT_SECRET};
    use portcullis::sync::jamf::{self, ApiVersion, JamfClient};
    let emu = Emulator::start().await;
    for version in [ApiVersion::V1, ApiVersion::V3] {
        let (s, _d) = store().await;
        let retry = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(2),
        };
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let client = JamfClient::new(
            &emu.url,
            JAMF_CLIENT_ID,
            portcullis::config::Secret::new(JAMF_CLIENT_SECRET),
            version,
            http,
            retry,
        );
        let st = jamf::sync(&client, &s, 2).await.unwrap();
        assert_eq!(
            st.computers, 5,
            "alice, bob, carol, erin, olivia are managed by Jamf ({version:?})"
        );
        assert_eq!(st.pages, 3);
        let carol = s
            .computers_for_user("a1000000-0000-4000-8000-000000000003", None)
            .await
            .unwrap();
        assert_eq!(carol.len(), 1);
        assert_eq!(
            carol[0].serial.as_deref(),
            Some(portcullis::emulator::fixtures::serial("carol").as_str())
        );
        assert!(
            carol[0].last_contact.is_some(),
            "the check-in time is read in both shapes ({version:?})"
        );
        let (c, acct) = s
            .device_evidence(ALICE_DEVICE)
            .await
            .unwrap()
            .jamf
            .expect("alice's Mac joins on the device id");
        assert_eq!(
            (c.os_version.as_deref(), acct.registration),
            (Some("14.5"), RegistrationState::Activated)
        );
        // Computers Jamf no longer lists go.
        s.upsert_computers(&[Computer {
            jamf_id: "999".into(),
            ..c.clone()
        }])
        .await
        .unwrap();
        let again = jamf::sync(&client, &s, 100).await.unwrap();
        assert_eq!(again.removed, 1);
    }
    // A wrong secret is a clear error, and a Jamf outage does not touch the store.
    let (s, _d) = store().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let bad = JamfClient::new(
        &emu.url,
        JAMF_CLIENT_ID,
        portcullis::config::Secret::new("nope"),
        ApiVersion::V3,
        http,
        RetryPolicy::default(),
    );
    let e = jamf::sync(&bad, &s, 100).await.unwrap_err().to_string();
    assert!(e.contains("token request refused"), "{e}");
    assert!(!e.contains("nope"), "secrets never appear in errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_is_shared_to_entra_only_when_changed_with_history_per_user() {
    use portcullis::sync::share::{share, ShareSettings};
    let emu = Emulator::start().await;
    let g = graph(&emu);
    let (s, _d) = store().await;
    portcullis::demo::seed(&s, 1_700_000_000).await.unwrap();
    // A computer that must not be shared: a network account on macOS 10.10.
    let mut old = s.computer("101").await.unwrap().unwrap();
    old.jamf_id = "777".into();
    old.os_version = Some("10.10.5".into());
    old.accounts[0].account_type = AccountType::Network;
    old.accounts[0].username = "legacy".into();
    s.upsert_computers(&[old]).await.unwrap();
    let settings = ShareSettings {
        attributes: [
            ("extensionAttribute10".to_string(), "jamf:{managed}".to_string()),
            ("extensionAttribute11".to_string(), "{os_version}".to_string()),
        ]
        .into(),
    };

    let first = share(&g, &s, &settings, None, false).await.unwrap();
    assert_eq!(
        first.sent, 4,
        "alice, bob, erin and olivia have registered Macs: {first:?}"
    );
    assert_eq!(first.unsupported, 1);
    let dev: serde_json::Value = client()
        .get(format!("{}/_emulator/devices/{ALICE_DEVICE}", emu.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dev["extensionAttributes"]["extensionAttribute10"], "jamf:managed");
    assert_eq!(dev["extensionAttributes"]["extensionAttribute11"], "14.5");
    let h = s.history("101", 10).await.unwrap();
    assert_eq!(
        (h.len(), h[0].username.as_str(), h[0].result.as_str()),
        (1, "alice", "ok")
    );
    let legacy = s.history("777", 10).await.unwrap();
    assert!(legacy[0].result.starts_with("unsupported"), "{legacy:?}");

    // Nothing changed: nothing sent.
    let second = share(&g, &s, &settings, None, false).await.unwrap();
    assert_eq!((second.sent, second.unchanged), (0, 4));
    assert_eq!(
        s.history("777", 10).await.unwrap().len(),
        1,
        "unsupported is recorded once"
    );

    // Alice's Mac is upgraded: only hers goes out.
    let mut alice = s.computer("101").await.unwrap().unwrap();
    alice.os_version = Some("15.1".into());
    s.upsert_computers(&[alice]).await.unwrap();
    let third = share(&g, &s, &settings, None, false).await.unwrap();
    assert_eq!(third.sent, 1);
    let dev: serde_json::Value = client()
        .get(format!("{}/_emulator/devices/{ALICE_DEVICE}", emu.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dev["extensionAttributes"]["extensionAttribute11"], "15.1");

    // Send Update for one computer, with throttling inside the batch.
    emu.fault(json!({ "endpoint": "batch_item", "status": 429, "retry_after": 1, "count": 1 }))
        .await;
    let started = Instant::now();
    let forced = share(&g, &s, &settings, Some("101"), true).await.unwrap();
    assert_eq!(forced.sent, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the inner Retry-After was honoured"
    );
    let h = s.history("101", 10).await.unwrap();
    assert_eq!(h.len(), 3, "each send is in alice's history, newest first: {h:?}");
    assert!(h[0].payload.contains("15.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_test_explains_each_failure() {
    use portcullis::emulator::jamf::{JAMF_CLIENT_ID, JAMF_CLIENT_SECRET};
    use portcullis::sync::jamf::{ApiVersion, JamfClient};
    use portcullis::sync::test_connection::{run_test, StepStatus};
    let emu = Emulator::start().await;
    let jamf = |secret: &str| {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let retry = RetryPolicy {
            attempts: 2,
            base: Duration::from_millis(10),
            max: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(1),
        };
        JamfClient::new(
            &emu.url,
            JAMF_CLIENT_ID,
            portcullis::config::Secret::new(secret),
            ApiVersion::V3,
            http,
            retry,
        )
    };
    let status = |r: &portcullis::sync::test_connection::TestReport, name: &str| {
        let s = r.steps.iter().find(|s| s.name == name).unwrap();
        (s.status.clone(), s.message.clone())
    };

    let good = run_test(&graph(&emu), Some(&jamf(JAMF_CLIENT_SECRET))).await;
    assert!(good.ok, "{good:#?}");
    assert!(good.steps.iter().all(|s| s.status == StepStatus::Ok), "{good:#?}");
    assert!(status(&good, "compliance_partner").1.contains("enabled"));
    assert!(status(&good, "jamf").1.contains("5 computers"));

    let cases = [
        (
            graph_with(
                &emu,
                personas::TENANT_ID,
                personas::GATEWAY_CLIENT_ID,
                "s3cr3t-value-123",
            ),
            "client secret is wrong",
        ),
        (
            graph_with(&emu, personas::TENANT_ID, "00000000-0000-0000-0000-0000000000ff", "x"),
            "not found in this tenant",
        ),
        (
            graph_with(
                &emu,
                "no-such-tenant.test",
                personas::GATEWAY_CLIENT_ID,
                personas::GATEWAY_CLIENT_SECRET,
            ),
            "tenant was not found",
        ),
    ];
    for (g, words) in cases {
        let r = run_test(&g, None).await;
        assert!(!r.ok);
        let (st, msg) = status(&r, "token");
        assert_eq!(st, StepStatus::Failed);
        assert!(msg.contains(words), "{msg}");
        assert!(
            !msg.contains("s3cr3t-value-123"),
            "the secret never appears in a message"
        );
        assert_eq!(status(&r, "graph_devices").0, StepStatus::Skipped);
    }

    emu.fault(json!({ "endpoint": "graph", "status": 403, "count": 1 }))
        .await;
    let r = run_test(&graph(&emu), None).await;
    assert!(!r.ok);
    let (st, msg) = status(&r, "graph_devices");
    assert_eq!(st, StepStatus::Failed);
    assert!(msg.contains("Device.Read.All"), "{msg}");

    emu.fault(json!({ "endpoint": "intune", "status": 403, "count": 1 }))
        .await;
    let r = run_test(&graph(&emu), None).await;
    assert!(r.ok, "a missing Intune permission is a warning");
    let (st, msg) = status(&r, "intune_managed_devices");
    assert_eq!(st, StepStatus::Warning);
    assert!(
        msg.contains("Intune licence") || msg.contains("DeviceManagementManagedDevices"),
        "{msg}"
    );

    let r = run_test(&graph(&emu), Some(&jamf("nope"))).await;
    assert!(!r.ok);
    let (st, msg) = status(&r, "jamf");
    assert_eq!(st, StepStatus::Failed);
    assert!(msg.contains("token request refused") && !msg.contains("nope"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jamf_webhooks_trigger_authenticated_re_reads_and_are_never_trusted_as_data() {
    use base64::Engine;
    use portcullis::emulator::jamf::{JAMF_CLIENT_ID, JAMF_CLIENT_SECRET};
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("p.db");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        portcullis::demo::seed(&s, 1_700_000_000).await.unwrap();
        s.close().await;
    }
    let body = format!(
        "{}{}\n[store]\nsqlite_path = \"{}\"\n[sync]\nenabled = false\n[jamf]\nurl = \"{}\"\nclient_id = \"{JAMF_CLIENT_ID}\"\nclient_secret = \"{JAMF_CLIENT_SECRET}\"\nwebhook_username = \"jamf\"\nwebhook_password = \"hook-pass\"\n\n[[routes]]\nupstream = \"app\"\n",
        emu.entra_section(""),
        pool("app", &[app.addr], ""),
        path.display(),
        emu.url
    );
    let gw = Gateway::start(&body).await;
    let hook = format!("http://{}/webhooks/jamf", gw.admin);
    // carol registers her Mac: Jamf now knows its Entra device id.
    {
        let mut jamf = emu.state.jamf.lock().unwrap();
        let carol = jamf
            .computers
            .iter_mut()
            .find(|c| c.accounts[0].username == "carol")
            .unwrap();
        carol.accounts[0].entra_device_id = Some("d1000000-0000-4000-8000-00000000000c".into());
        carol.accounts[0].registration = RegistrationState::Activated;
    }
    let auth = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let event = json!({
        "webhook": { "id": 7, "name": "compliance", "webhookEvent": "SmartGroupComputerMembershipChange", "eventTimestamp": 1 },
        "event": { "groupAddedDevicesIds": [103], "groupRemovedDevicesIds": [], "name": "Compliant", "smartGroup": true,
                   "serialNumber": "FORGED" },
    });
    let r = client()
        .post(&hook)
        .header("authorization", auth("jamf", "wrong"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Refusals are problem+json like every other error of the gateway.
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "unauthorized", "{body}");
    let r = client()
        .post(&hook)
        .header("authorization", auth("jamf", "hook-pass"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "malformed", "{body}");
    let r = client()
        .post(&hook)
        .header("authorization", auth("jamf", "hook-pass"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let store = SqliteStore::open(&path).await.unwrap();
    let (c, _) = poll_until("the webhook caused a re-read", Duration::from_secs(5), || async {
        let c = store.computer("103").await.unwrap().unwrap();
        match c.accounts[0].entra_device_id {
            Some(_) => Ok(c),
            None => Err(format!("{:?}", c.accounts[0])),
        }
    })
    .await;
    assert_eq!(
        c.serial.as_deref(),
        Some(portcullis::emulator::fixtures::serial("carol").as_str()),
        "data comes from the API"
    );
    assert!(!gw.logs().contains("hook-pass"), "webhook secrets never reach the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_sync_loses_nothing_and_resumes() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    control(&emu, "directory/seed", json!({ "devices": 6000 })).await; // 6,004 devices
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("p.db");
    let body = format!(
        "{}{}\n[store]\nsqlite_path = \"{}\"\n[sync]\ninterval = \"1s\"\npage_size = 20\nintune = false\n\n[[routes]]\nupstream = \"app\"\n",
        emu.entra_section(""),
        pool("app", &[app.addr], ""),
        path.display()
    );
    let gw = Gateway::start(&body).await;
    let count = |p: std::path::PathBuf| async move {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&p).read_only(true);
        let mut conn = sqlx::ConnectOptions::connect(&opts).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entra_devices")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let cursor: Option<String> = sqlx::query_scalar("SELECT cursor FROM sync_cursors WHERE source = 'entra'")
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        (n, cursor)
    };
    // Wait until the first round is part-way, then kill the gateway without warning.
    let ((mid, cursor), _) = poll_until("the sync part-way", Duration::from_secs(20), || async {
        match count(path.clone()).await {
            (n, cursor) if n >= 200 => Ok((n, cursor)),
            (n, _) => Err(format!("{n} devices")),
        }
    })
    .await;
    let gw = {
        let mut gw = gw;
        gw.child.kill().unwrap(); // SIGKILL
        gw.child.wait().unwrap();
        gw
    };
    assert!(mid < 6004, "killed before the round finished ({mid})");
    assert!(
        cursor.is_some_and(|c| c.contains("$skiptoken=")),
        "a mid-round cursor was persisted"
    );
    let (after_kill, _) = count(path.clone()).await;
    assert!(after_kill >= mid, "nothing applied was lost");
    // Restart: the round resumes from the last applied page and completes.
    let _gw = gw.restart().await;
    poll_until("the resumed sync finished", Duration::from_secs(30), || async {
        let (n, cursor) = count(path.clone()).await;
        assert!(n <= 6004, "no device was written twice as two rows ({n})");
        match cursor {
            Some(c) if n == 6004 && c.contains("$deltatoken=") => Ok(()),
            other => Err(format!("{n} devices, cursor {other:?}")),
        }
    })
    .await;
}

/// A gateway syncing the emulated tenant every second, its settings in a store the test
/// writes to as another node would: the fixture of the settings tests.
struct SettingsEnv {
    emu: Emulator,
    _app: Upstream,
    _db: tempfile::TempDir,
    path: std::path::PathBuf,
    gw: Gateway,
    store: SqliteStore,
}

const SETTINGS_COOKIE_KEY: &str = "c2V0dGluZ3MtYXBwbHktd2l0aG91dC1yZXN0YXJ0LTM=";

impl SettingsEnv {
    async fn start() -> Self {
        let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
        let db = tempfile::tempdir().unwrap();
        let path = db.path().join("p.db");
        {
            let s = SqliteStore::open(&path).await.unwrap();
            portcullis::demo::seed(&s, 0).await.unwrap();
            s.close().await;
        }
        let body = format!(
            "{}{}\n[store]\nsqlite_path = \"{}\"\n[sync]\ninterval = \"1s\"\nintune = false\n[session]\ncookie_key = \"{SETTINGS_COOKIE_KEY}\"\n\n[[routes]]\nupstream = \"app\"\n",
            emu.entra_section(""),
            pool("app", &[app.addr], ""),
            path.display()
        );
        let gw = Gateway::start(&body).await;
        let store = SqliteStore::open(&path).await.unwrap();
        let env = Self {
            emu,
            _app: app,
            _db: db,
            path,
            gw,
            store,
        };
        poll_until("the first sync", Duration::from_secs(10), || env.runs_past(true, 0)).await;
        env
    }

    /// Entra sync runs so far that succeeded (`ok`) or failed.
    async fn runs(&self, ok: bool) -> u64 {
        let label = if ok { "ok" } else { "error" };
        self.gw
            .metrics()
            .await
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "portcullis_sync_runs_total{{result=\"{label}\",source=\"entra\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()))
            .unwrap_or(0)
    }

    /// For [`poll_until`]: the count of `ok` (or failed) runs once it differs from `from`.
    async fn runs_past(&self, ok: bool, from: u64) -> Result<u64, String> {
        match self.runs(ok).await {
            n if n != from => Ok(n),
            n => Err(format!("{n} runs")),
        }
    }

    /// Another node's save of the settings document.
    async fn write(&self, f: impl FnOnce(&mut portcullis::sync::settings::ConditionalAccess)) {
        use portcullis::sync::settings::KEY;
        let (json, v) = self.store.setting(KEY).await.unwrap().unwrap();
        let mut doc = serde_json::from_str(&json).unwrap();
        f(&mut doc);
        self.store
            .put_setting(KEY, &serde_json::to_string(&doc).unwrap(), Some(v))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_sync_in_the_settings_stops_it_and_keeps_every_setting() {
    use portcullis::sync::settings::KEY;
    let env = SettingsEnv::start().await;
    let store = &env.store;
    // Off: the sync stops; every setting is kept. Proving that nothing happens takes time:
    // the settings follower's second and a run in progress, then two sync intervals (1 s) in
    // which no run may start.
    env.write(|d| d.enabled = false).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stopped = env.runs(true).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(env.runs(true).await, stopped, "no sync while disabled");
    let (json, _) = store.setting(KEY).await.unwrap().unwrap();
    assert!(json.contains(personas::TENANT_ID), "settings kept while disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_landing_choice_applies_to_the_next_unrecognized_device() {
    use portcullis::sync::settings::LandingChoice;
    let env = SettingsEnv::start().await;
    let emu = &env.emu;
    let gw = &env.gw;
    // The landing choice changes for the next unrecognized device.
    let dave = emu.token("persona=dave").await;
    let page = |t: String| {
        let url = gw.url("/");
        async move {
            client()
                .get(url)
                .bearer_auth(t)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(page(dave.clone()).await.contains("Enroll this Mac"));
    env.write(|d| d.landing = LandingChoice::AccessDenied).await;
    poll_until("the landing choice applied", Duration::from_secs(5), || async {
        let p = page(dave.clone()).await;
        if p.contains("Access denied") {
            Ok(())
        } else {
            Err(p)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_secret_is_sealed_at_rest_and_used_by_the_next_run() {
    use portcullis::sync::settings::{Settings, KEY};
    let env = SettingsEnv::start().await;
    let gw = &env.gw;
    let store = &env.store;
    let path = &env.path;
    let cookie_key = SETTINGS_COOKIE_KEY;
    // A new client secret (sealed at rest) is used by the next run: a wrong one fails...
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, cookie_key.as_bytes());
    let sealer = portcullis::base::seal::Sealer::new(ring::hmac::sign(&key, b"portcullis settings").as_ref()).unwrap();
    let (json, _) = store.setting(KEY).await.unwrap().unwrap();
    let settings = Settings::load_or_seed(store, serde_json::from_str(&json).unwrap(), sealer)
        .await
        .unwrap();
    let mut doc = (*settings.current()).clone();
    doc.enabled = true;
    settings.set_client_secret(&mut doc, "an-old-revoked-secret").unwrap();
    let errors_before = env.runs(false).await;
    settings.put(store, doc.clone(), settings.version()).await.unwrap();
    poll_until("a wrong secret failed the sync", Duration::from_secs(8), || {
        env.runs_past(false, errors_before)
    })
    .await;
    // ...and the right one works again.
    settings
        .set_client_secret(&mut doc, personas::GATEWAY_CLIENT_SECRET)
        .unwrap();
    let ok_before = env.runs(true).await;
    settings.put(store, doc, settings.version()).await.unwrap();
    poll_until("the right secret synced", Duration::from_secs(8), || {
        env.runs_past(true, ok_before)
    })
    .await;
    let raw = [
        std::fs::read(path).unwrap(),
        std::fs::read(path.with_extension("db-wal")).unwrap_or_default(),
    ]
    .concat();
    for secret in ["an-old-revoked-secret", personas::GATEWAY_CLIENT_SECRET] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} stored in clear"
        );
    }
    assert!(!gw.logs().contains("an-old-revoked-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_settings_runs_the_test_like_jamf_pro() {
    use portcullis::sync::settings::{ConditionalAccess, ConnectionType, LandingChoice, Settings};
    use portcullis::sync::{SyncLoop, SyncSettings};
    let emu = Emulator::start().await;
    let (s, _d) = store().await;
    let s = Arc::new(s);
    let sealer = portcullis::base::seal::Sealer::random().unwrap();
    let initial = ConditionalAccess {
        enabled: true,
        connection: ConnectionType::Manual,
        cloud: "global".into(),
        tenant_id: personas::TENANT_ID.into(),
        application_id: personas::GATEWAY_CLIENT_ID.into(),
        client_secret_sealed: None,
        secret_changed_at: None,
        landing: LandingChoice::Registration,
        shared_attributes: None,
    };
    let ca = Settings::load_or_seed(&*s, initial, sealer).await.unwrap();
    let (url, settings) = (emu.url.clone(), ca.clone());
    let connect = move |doc: &ConditionalAccess| -> Option<GraphClient> {
        let secret = settings.client_secret(doc)?;
        let cred = ClientCredential::load(&portcullis::config::ClientCredentialConfig::Secret(
            portcullis::config::Secret::new(secret),
        ))
        .ok()?;
        let http = reqwest::Client::builder().no_proxy().build().ok()?;
        let tokens = Arc::new(AppTokens::new(
            &url,
            &doc.tenant_id,
            &doc.application_id,
            &format!("{url}/.default"),
            Some(Arc::new(cred)),
            http.clone(),
        ));
        Some(GraphClient::new(&url, tokens, http, RetryPolicy::default(), 1000))
    };
    let sync = SyncLoop {
        graph: arc_swap::ArcSwap::from_pointee(graph(&emu)),
        connect: Box::new(connect),
        reconnect: Default::default(),
        ca: Some(ca.clone()),
        jamf: None,
        store: s.clone(),
        settings: SyncSettings {
            interval: Duration::from_secs(60),
            intune: false,
            intune_interval: Duration::from_secs(60),
            full_reconcile: Duration::from_secs(86_400),
            page_size: 999,
            lease_ttl: Duration::from_secs(60),
            jamf_interval: Duration::from_secs(60),
            jamf_page_size: 100,
            share: Default::default(),
        },
        node: "test".into(),
        metrics: portcullis::metrics::Metrics::new(),
        now: Arc::new(tokio::sync::Notify::new()),
    };
    // Save with a wrong secret: stored, and the test says what is wrong.
    let mut doc = (*ca.current()).clone();
    ca.set_client_secret(&mut doc, "pasted-the-secret-id").unwrap();
    let (v, report) = sync.save_settings(doc.clone(), ca.version()).await.unwrap();
    assert_eq!(v, 2);
    assert!(!report.ok);
    assert!(report.steps[0].message.contains("client secret is wrong"), "{report:?}");
    // A stale save is refused.
    assert!(sync.save_settings(doc.clone(), 1).await.is_err());
    // Save the right secret: the test passes and the sync works with it.
    ca.set_client_secret(&mut doc, personas::GATEWAY_CLIENT_SECRET).unwrap();
    let (_, report) = sync.save_settings(doc, ca.version()).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(sync.run_entra().await.unwrap().upserted, 4);
    assert!(sync.test_connection().await.ok);
}

/// Paths Microsoft's and Jamf's own clients use, and unknown paths answered in each service's
/// error shape (issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_serves_the_sdk_paths_and_answers_unknown_ones_like_the_services() {
    let emu = Emulator::start().await;
    let http = reqwest::Client::new();
    let token = emu.app_token("https://graph.microsoft.com/.default").await;
    // `delta()` as the Graph SDKs send it: the same first page as `delta`.
    let page = |path: &'static str| {
        let (http, url, token) = (http.clone(), emu.url.clone(), token.clone());
        async move {
            let r = http
                .get(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or_default())
        }
    };
    let (plain, fn_form) = (page("/v1.0/devices/delta").await, page("/v1.0/devices/delta()").await);
    assert_eq!((plain.0, fn_form.0), (200, 200));
    assert_eq!(
        plain.1["value"].as_array().map(Vec::len),
        fn_form.1["value"].as_array().map(Vec::len)
    );
    // `$select` is honoured (id and annotations always come along), and the links keep it.
    let (_, sel) = page("/v1.0/devices/delta?$select=deviceId,isCompliant&$top=2").await;
    let first = &sel["value"][0];
    let mut keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["deviceId", "id", "isCompliant"], "{sel}");
    assert!(
        sel["@odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("$select=deviceId,isCompliant"),
        "{sel}"
    );
    // Last sign-ins differ per device, as in a real tenant.
    let all = &plain.1["value"];
    assert_ne!(
        all[0]["approximateLastSignInDateTime"], all[1]["approximateLastSignInDateTime"],
        "{all}"
    );
    // One device by object id and by its device id (the alternate key), with `$select`.
    let (object_id, device_id) = (first["id"].as_str().unwrap(), first["deviceId"].as_str().unwrap());
    let one = |path: String| {
        let (http, url, token) = (http.clone(), emu.url.clone(), token.clone());
        async move {
            let r = http
                .get(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or_default())
        }
    };
    let (status, by_id) = one(format!("/v1.0/devices/{object_id}?$select=deviceId,displayName")).await;
    assert_eq!(status, 200, "{by_id}");
    assert_eq!(
        (&by_id["deviceId"], by_id.get("isCompliant")),
        (&json!(device_id), None),
        "{by_id}"
    );
    assert!(by_id["displayName"].is_string(), "{by_id}");
    let (status, by_key) = one(format!("/v1.0/devices(deviceId='{device_id}')")).await;
    assert_eq!((status, &by_key["id"]), (200, &json!(object_id)), "{by_key}");
    let (status, e) = one("/v1.0/devices/00000000-0000-0000-0000-000000000000".into()).await;
    assert_eq!(
        (status, &e["error"]["code"]),
        (404, &json!("Request_ResourceNotFound")),
        "{e}"
    );
    // `$batch` items with absolute URLs, as the SDKs' batch builders write them.
    let r: Value = http
        .post(format!("{}/v1.0/$batch", emu.url))
        .bearer_auth(&token)
        .json(&json!({ "requests": [{
            "id": "1", "method": "PATCH",
            "url": format!("https://graph.microsoft.com/v1.0/devices(deviceId='{device_id}')"),
            "headers": { "Content-Type": "application/json" },
            "body": { "extensionAttributes": { "extensionAttribute9": "absolute" } },
        }]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["responses"][0]["status"], 204, "{r}");
    let (_, after) = one(format!(
        "/v1.0/devices(deviceId='{device_id}')?$select=extensionAttributes"
    ))
    .await;
    assert_eq!(
        after["extensionAttributes"]["extensionAttribute9"], "absolute",
        "{after}"
    );
    // An unknown segment: Graph's OData error.
    let (status, e) = page("/v1.0/notAThing").await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["code"], "BadRequest", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("'notAThing'"), "{e}");

    // Jamf Pro's current token path, and its error body for an unknown path.
    let jamf = |path: &'static str| {
        let (http, url) = (http.clone(), emu.url.clone());
        async move {
            http.post(format!("{url}{path}"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", portcullis::emulator::jamf::JAMF_CLIENT_ID),
                    ("client_secret", portcullis::emulator::jamf::JAMF_CLIENT_SECRET),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    for path in ["/api/v1/oauth/token", "/api/oauth/token"] {
        let r = jamf(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.json::<Value>().await.unwrap()["access_token"].is_string(), "{path}");
    }
    // computers-inventory: only the asked-for sections, Jamf's disk-encryption names, sort
    // and RSQL filter; bad ones answered with Jamf's 400.
    let jamf_token = jamf("/api/v1/oauth/token").await.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let inventory = |query: &'static str| {
        let (http, url, token) = (http.clone(), emu.url.clone(), jamf_token.clone());
        async move {
            let r = http
                .get(format!("{url}/api/v1/computers-inventory?{query}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or_default())
        }
    };
    let (status, general) = inventory("page-size=100").await;
    assert_eq!(status, 200);
    let first = &general["results"][0];
    assert!(
        first["general"]["name"].is_string() && first["hardware"].is_null() && first["diskEncryption"].is_null(),
        "{first}"
    );
    let (_, disk) = inventory("section=GENERAL&section=DISK_ENCRYPTION&filter=general.name==*Alice*").await;
    assert_eq!(disk["totalCount"], 1, "{disk}");
    let boot = &disk["results"][0]["diskEncryption"]["bootPartitionEncryptionDetails"];
    assert_eq!(boot["partitionFileVault2State"], "ENCRYPTED", "{disk}");
    assert_eq!(boot["partitionFileVault2Percent"], 100, "{disk}");
    let (_, bob) = inventory("section=DISK_ENCRYPTION&filter=general.name==Bob*;general.platform==Mac").await;
    assert_eq!(
        bob["results"][0]["diskEncryption"]["bootPartitionEncryptionDetails"]["partitionFileVault2State"],
        "UNENCRYPTED",
        "{bob}"
    );
    let names = |v: &Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["general"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, desc) = inventory("sort=general.name:desc").await;
    let mut sorted = names(&general);
    sorted.sort_by_key(|n| std::cmp::Reverse(n.to_ascii_lowercase()));
    assert_eq!(names(&desc), sorted);
    for (query, code) in [
        ("section=NOPE", "INVALID_FIELD"),
        ("sort=serial:asc", "INVALID_SORT"),
        ("filter=general.name=gt=x", "INVALID_RSQL_FILTER"),
        ("filter=secret.field==x", "INVALID_RSQL_FILTER"),
    ] {
        let (status, e) = inventory(query).await;
        assert_eq!((status, &e["errors"][0]["code"]), (400, &json!(code)), "{query}: {e}");
    }
    let r = jamf("/api/v9/nothing").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["httpStatus"], 404);

    // Discovery advertises only the PKCE method authorize accepts.
    let d: Value = http
        .get(format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            emu.url,
            personas::TENANT_ID
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_serves_https_and_names_only_https_urls() {
    let dir = tempfile::tempdir().unwrap();
    crate::harness::make_certs(dir.path(), &["localhost"]);
    let port = crate::harness::free_port();
    let _emu = tokio::process::Command::new(crate::harness::bin())
        .args(["emulator", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(dir.path().join("localhost.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("localhost-key.pem"))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let discovery = format!("{base}/{}/v2.0/.well-known/openid-configuration", personas::TENANT_ID);
    let (d, _) = crate::harness::poll_until("the HTTPS emulator answers", Duration::from_secs(15), || async {
        match http.get(&discovery).send().await {
            Ok(r) => r.json::<Value>().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    for key in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "end_session_endpoint",
    ] {
        assert!(d[key].as_str().unwrap().starts_with(&format!("{base}/")), "{key}: {d}");
    }
    // An app token over TLS, then Graph: its links name the https address too.
    let t: Value = http
        .post(d["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", personas::GATEWAY_CLIENT_ID),
            ("client_secret", personas::GATEWAY_CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page: Value = http
        .get(format!("{base}/v1.0/devices/delta?$top=1"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        page["@odata.nextLink"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/v1.0/")),
        "{page}"
    );
    // A client that does not trust the development CA is refused at the handshake.
    assert!(reqwest::Client::builder()
        .no_proxy()
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap()
        .get(&discovery)
        .send()
        .await
        .is_err());
}
