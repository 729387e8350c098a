//! The SQLite store under a hard crash: a writer process is killed (SIGKILL) at an arbitrary
//! moment, several times; every write it had acknowledged is there afterwards and the database
//! opens cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use portcullis::store::sqlite::SqliteStore;
use portcullis::store::*;

const WRITER_ENV: &str = "PORTCULLIS_TEST_WRITER_DB";

fn computer(i: u64) -> Computer {
    Computer {
        jamf_id: format!("{i:08}"),
        udid: None,
        serial: Some(format!("SERIAL{i}")),
        name: Some(format!("Mac {i}")),
        model: None,
        os_version: Some("14.5".into()),
        os_build: None,
        managed: true,
        filevault: None,
        last_inventory: None,
        last_contact: None,
        seen_at: i as i64,
        accounts: vec![LocalAccount {
            username: format!("user{i}"),
            account_type: AccountType::Local,
            entra_user_id: None,
            entra_device_id: Some(format!("dev-{i}")),
            registration: RegistrationState::Activated,
        }],
    }
}

/// The writer, run as a child process of the test below (does nothing in a normal run).
#[test]
fn store_writer_child() {
    let Ok(path) = std::env::var(WRITER_ENV) else { return };
    let start: u64 = std::env::var("PORTCULLIS_TEST_WRITER_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = SqliteStore::open(std::path::Path::new(&path)).await.unwrap();
        for i in start.. {
            s.upsert_computers(&[computer(i)]).await.unwrap();
            s.record_send(&HistoryEntry {
                jamf_id: format!("{i:08}"),
                username: format!("user{i}"),
                entra_device_id: None,
                sent_at: i as i64,
                payload: "{}".into(),
                result: "ok".into(),
            })
            .await
            .unwrap();
            // Printed only after both writes were acknowledged.
            println!("ACK {i}");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_write_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut next = 0u64;
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::store_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, &path)
            .env("PORTCULLIS_TEST_WRITER_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let target = 40 + round * 37;
        let mut acked = Vec::new();
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("ACK ") {
                acked.push(n.parse::<u64>().unwrap());
                if acked.len() as u64 >= target {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL, mid-way through the next write
        child.wait().unwrap();
        // Acknowledgements already in the pipe count too.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ACK ") {
                acked.push(n.parse().unwrap());
            }
        }
        assert!(
            acked.len() as u64 >= target,
            "round {round}: the writer acknowledged only {}",
            acked.len()
        );
        let s = SqliteStore::open(&path)
            .await
            .expect("the database opens cleanly after a kill -9");
        assert!(s.schema_version().await.unwrap() >= 2);
        for i in &acked {
            let c = s.computer(&format!("{i:08}")).await.unwrap();
            assert_eq!(
                c.as_ref().map(|c| c.accounts.len()),
                Some(1),
                "round {round}: acknowledged write {i} lost"
            );
            assert_eq!(
                s.history(&format!("{i:08}"), 5).await.unwrap().len(),
                1,
                "round {round}: history {i} lost"
            );
        }
        next = acked.iter().max().unwrap() + 1;
        s.close().await;
    }
}
