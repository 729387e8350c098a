//! `portcullis admin …`: the admin API from a shell. Every sub-command is one or two calls to
//! `/api/v1/…` on a running gateway; the output is a short human table, or the API's JSON with
//! `--json`. Exit codes (stable, for scripts): see [`Exit`].
//!
//! Depends only on the HTTP API (reqwest), never on the gateway's internals, so it works
//! against any node of the same version.

use std::io::Read;
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

/// Exit codes the CLI promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// The call worked and reports a failure (Run Test failed a step; a job failed).
    Failed = 1,
    /// The gateway could not be reached, or answered something that is not its API.
    Unreachable = 3,
    /// 401/403: no token, a wrong token, or a read-only token for a change.
    Refused = 4,
    /// 404: no such computer, device, job or setting.
    NotFound = 5,
    /// Any other refusal: invalid value (400/422), stale write (412), sync off (409), 5xx.
    Rejected = 6,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Per-source sync status: last success, lag, last error.
    Status,
    /// Run Test: every step of the connection to Microsoft, with its result.
    TestConnection,
    /// Send Update: resend inventory to Microsoft (all computers, or one) and wait for it.
    SendUpdate {
        #[arg(long)]
        computer: Option<String>,
    },
    /// The Jamf inventory with each account's Conditional Access state.
    Computers {
        /// Substring of a name, serial or username.
        #[arg(long)]
        filter: Option<String>,
        /// ACTIVATED, DEACTIVATED, UNRESPONSIVE or UNKNOWN.
        #[arg(long)]
        state: Option<String>,
    },
    /// One computer, by Jamf id.
    Computer { id: String },
    /// Inventory sent to Microsoft for a computer, newest first.
    History { id: String },
    /// The Conditional Access settings.
    Settings {
        #[command(subcommand)]
        command: SettingsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum SettingsCommand {
    /// Show the settings (secrets only as "set, when").
    Get,
    /// Change one setting: a JSON value (`true`, `{"kind":"access_denied"}`) or plain text.
    /// For `client_secret`, give `-` and pass the secret on stdin, keeping it out of `ps`.
    Set { key: String, value: String },
}

/// Runs one sub-command against `url` and prints its output.
pub fn run(url: &str, token: &str, json: bool, cmd: AdminCommand) -> Exit {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis admin: cannot start the runtime: {e}");
            return Exit::Unreachable;
        }
    };
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(60)).build() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("portcullis admin: HTTP client: {e}");
            return Exit::Unreachable;
        }
    };
    let client = Client {
        http,
        base: url.trim_end_matches('/').to_string(),
        token: token.to_string(),
    };
    match rt.block_on(command(&client, json, cmd)) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("portcullis admin: {}", e.message);
            e.exit
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

struct CliError {
    exit: Exit,
    message: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, Option<String>), CliError> {
        self.call_if(method, path, body, None).await
    }

    /// One API call; a problem+json answer becomes an error with its detail and exit code.
    async fn call_if(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<(Value, Option<String>), CliError> {
        let unreachable = |m: String| CliError {
            exit: Exit::Unreachable,
            message: m,
        };
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(tag) = if_match {
            req = req.header(reqwest::header::IF_MATCH, tag);
        }
        // The error names the URL only; reqwest never puts the bearer token in it.
        let resp = req
            .send()
            .await
            .map_err(|e| unreachable(format!("{}: {e}", self.base)))?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp
            .text()
            .await
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|_| unreachable(format!("{path}: HTTP {status}, not the admin API's JSON")))?;
        if status.is_success() {
            return Ok((value, etag));
        }
        let exit = match status.as_u16() {
            401 | 403 => Exit::Refused,
            404 => Exit::NotFound,
            _ => Exit::Rejected,
        };
        let detail = value["detail"].as_str().unwrap_or("no detail");
        Err(CliError {
            exit,
            message: format!("HTTP {status}: {detail}"),
        })
    }
}

async fn command(c: &Client, json: bool, cmd: AdminCommand) -> Result<Exit, CliError> {
    use reqwest::Method;
    match cmd {
        AdminCommand::Status => {
            let (v, _) = c.call(Method::GET, "/api/v1/sync/status", None).await?;
            print(json, &v, || {
                let mut t = vec![row(&["SOURCE", "LAST SUCCESS", "LAG (s)", "LAST ERROR"])];
                for source in ["entra", "intune", "jamf", "share"] {
                    let s = &v[source];
                    t.push(row(&[
                        source,
                        &text(&s["last_success"]),
                        &text(&s["lag_seconds"]),
                        &text(&s["last_error"]["error"]),
                    ]));
                }
                t
            });
            Ok(Exit::Ok)
        }
        AdminCommand::TestConnection => {
            let (v, _) = c.call(Method::POST, "/api/v1/conditional-access/test", None).await?;
            print(json, &v, || {
                let mut t = vec![row(&["STEP", "RESULT", "MESSAGE"])];
                for s in v["steps"].as_array().into_iter().flatten() {
                    t.push(row(&[&text(&s["name"]), &text(&s["status"]), &text(&s["message"])]));
                }
                t
            });
            Ok(if v["ok"] == Value::Bool(true) {
                Exit::Ok
            } else {
                Exit::Failed
            })
        }
        AdminCommand::SendUpdate { computer } => {
            let body = serde_json::json!({ "computer": computer });
            let (v, _) = c
                .call(Method::POST, "/api/v1/conditional-access/send-update", Some(body))
                .await?;
            let job = text(&v["job"]);
            let done = loop {
                let (j, _) = c.call(Method::GET, &format!("/api/v1/jobs/{job}"), None).await?;
                if j["status"] != "running" {
                    break j;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            print(json, &done, || {
                vec![
                    row(&["JOB", "STATUS", "SENT", "ERROR"]),
                    row(&[
                        &job,
                        &text(&done["status"]),
                        &text(&done["result"]["sent"]),
                        &text(&done["result"]["error"]),
                    ]),
                ]
            });
            Ok(if done["status"] == "succeeded" {
                Exit::Ok
            } else {
                Exit::Failed
            })
        }
        AdminCommand::Computers { filter, state } => {
            let mut items = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("limit", "500");
                if let Some(f) = &filter {
                    q.append_pair("filter", f);
                }
                if let Some(s) = &state {
                    q.append_pair("state", s);
                }
                if let Some(a) = &after {
                    q.append_pair("after", a);
                }
                let (v, _) = c
                    .call(Method::GET, &format!("/api/v1/computers?{}", q.finish()), None)
                    .await?;
                items.extend(v["items"].as_array().cloned().unwrap_or_default());
                match v["next_after"].as_str() {
                    Some(n) => after = Some(n.to_string()),
                    None => break,
                }
            }
            let all = serde_json::json!({ "items": items });
            print(json, &all, || computer_rows(&items));
            Ok(Exit::Ok)
        }
        AdminCommand::Computer { id } => {
            let (v, _) = c
                .call(Method::GET, &format!("/api/v1/computers/{}", segment(&id)), None)
                .await?;
            print(json, &v, || computer_rows(std::slice::from_ref(&v)));
            Ok(Exit::Ok)
        }
        AdminCommand::History { id } => {
            let (v, _) = c
                .call(
                    Method::GET,
                    &format!("/api/v1/computers/{}/history", segment(&id)),
                    None,
                )
                .await?;
            print(json, &v, || {
                let mut t = vec![row(&["SENT AT", "USERNAME", "RESULT", "ATTRIBUTES"])];
                for h in v["items"].as_array().into_iter().flatten() {
                    t.push(row(&[
                        &text(&h["sent_at"]),
                        &text(&h["username"]),
                        &text(&h["result"]),
                        &h["attributes"].to_string(),
                    ]));
                }
                t
            });
            Ok(Exit::Ok)
        }
        AdminCommand::Settings {
            command: SettingsCommand::Get,
        } => {
            let (v, _) = c.call(Method::GET, "/api/v1/conditional-access", None).await?;
            print(json, &v, || settings_rows(&v));
            Ok(Exit::Ok)
        }
        AdminCommand::Settings {
            command: SettingsCommand::Set { key, value },
        } => {
            let (current, etag) = c.call(Method::GET, "/api/v1/conditional-access", None).await?;
            let Value::Object(mut body) = current else {
                return Err(CliError {
                    exit: Exit::Unreachable,
                    message: "the settings are not an object".into(),
                });
            };
            // The GET shows the secret as {set, changed_at}; the PUT keeps it when absent.
            body.remove("client_secret");
            let value = if key == "client_secret" && value == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map_err(|e| CliError {
                    exit: Exit::Rejected,
                    message: format!("reading the secret from stdin: {e}"),
                })?;
                Value::String(s.trim_end_matches(['\r', '\n']).to_string())
            } else {
                serde_json::from_str(&value).unwrap_or(Value::String(value))
            };
            if key != "client_secret" && !body.contains_key(&key) {
                let keys: Vec<&String> = body.keys().collect();
                return Err(CliError {
                    exit: Exit::NotFound,
                    message: format!("no setting {key:?}; settings are {keys:?} and client_secret"),
                });
            }
            body.insert(key, value);
            let (v, _) = c
                .call_if(
                    Method::PUT,
                    "/api/v1/conditional-access",
                    Some(Value::Object(body)),
                    etag.as_deref(),
                )
                .await?;
            print(json, &v, || {
                let mut t = settings_rows(&v["settings"]);
                t.push(row(&["version", &text(&v["version"])]));
                t.push(row(&[
                    "test",
                    if v["test"]["ok"] == Value::Bool(true) {
                        "ok"
                    } else {
                        "failed (see --json)"
                    },
                ]));
                t
            });
            Ok(Exit::Ok)
        }
    }
}

fn computer_rows(items: &[Value]) -> Vec<Vec<String>> {
    let mut t = vec![row(&[
        "ID",
        "NAME",
        "SERIAL",
        "USER",
        "REGISTRATION",
        "COMPLIANCE",
        "ENTRA DEVICE",
    ])];
    for c in items {
        let accounts = c["local_user_accounts"].as_array().cloned().unwrap_or_default();
        if accounts.is_empty() {
            t.push(row(&[
                &text(&c["id"]),
                &text(&c["name"]),
                &text(&c["serial"]),
                "-",
                "-",
                "-",
                "-",
            ]));
        }
        for a in &accounts {
            t.push(row(&[
                &text(&c["id"]),
                &text(&c["name"]),
                &text(&c["serial"]),
                &text(&a["username"]),
                &text(&a["registration_state"]),
                &text(&a["compliance"]["state"]),
                &text(&a["entra_device_id"]),
            ]));
        }
    }
    t
}

fn settings_rows(v: &Value) -> Vec<Vec<String>> {
    let mut t = vec![row(&["SETTING", "VALUE"])];
    for (k, val) in v.as_object().into_iter().flatten() {
        let shown = if k == "client_secret" {
            match (&val["set"], &val["file_credential"]) {
                (Value::Bool(true), _) => format!("set (changed {})", text(&val["changed_at"])),
                (_, Value::String(file)) => format!("not set; the configuration file's {file} is used"),
                _ => "not set".to_string(),
            }
        } else {
            text(val)
        };
        t.push(row(&[k, &shown]));
    }
    t
}

fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// A JSON value as a table cell: strings bare, null as "-".
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print(json: bool, v: &Value, table: impl FnOnce() -> Vec<Vec<String>>) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let rows = table();
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}
