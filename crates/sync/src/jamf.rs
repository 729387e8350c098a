//! Inventory in from Jamf Pro: an API client's OAuth token (`/api/oauth/token`), then
//! `computers-inventory` page by page with the GENERAL, HARDWARE, OPERATING_SYSTEM,
//! LOCAL_USER_ACCOUNTS and DISK_ENCRYPTION sections, behind [`ApiVersion`] (v1 and v3 differ
//! in field names). Each page is parsed completely, then written; after the last page,
//! computers Jamf no longer lists are removed.

use std::time::Duration;

use serde_json::Value;

use super::SyncError;
use base::retry::{BodyError, RetryError, RetryPolicy};
use base::token::TokenCache;
use base::Secret;
use store::{AccountType, Computer, InventoryWriter, LocalAccount, PostureStore, RegistrationState, SyncState};

pub const SOURCE: &str = "jamf";
const SECTIONS: [&str; 5] = [
    "GENERAL",
    "HARDWARE",
    "OPERATING_SYSTEM",
    "LOCAL_USER_ACCOUNTS",
    "DISK_ENCRYPTION",
];

/// Which `computers-inventory` the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V3,
}

impl ApiVersion {
    fn path(self) -> &'static str {
        match self {
            Self::V1 => "/api/v1/computers-inventory",
            Self::V3 => "/api/v3/computers-inventory",
        }
    }
}

/// Why Jamf could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JamfError {
    #[error("Jamf Pro token request refused ({0})")]
    Token(String),
    #[error("Jamf Pro: status {0}")]
    Status(u16),
    #[error("Jamf Pro: request failed: {0}")]
    Transport(String),
    #[error("Jamf Pro: unreadable response: {0}")]
    Body(String),
}

/// A Jamf Pro API client.
pub struct JamfClient {
    base: String,
    client_id: String,
    client_secret: Secret,
    version: ApiVersion,
    http: reqwest::Client,
    retry: RetryPolicy,
    token: TokenCache,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct JamfStats {
    pub pages: u32,
    pub computers: u64,
    pub removed: u64,
}

impl JamfClient {
    /// The client for the `[jamf]` section.
    pub fn from_config(cfg: &config::JamfConfig, http: reqwest::Client) -> Self {
        let version = if cfg.api_version == 1 {
            ApiVersion::V1
        } else {
            ApiVersion::V3
        };
        Self::new(
            &cfg.url,
            &cfg.client_id,
            cfg.client_secret.clone(),
            version,
            http,
            RetryPolicy::default(),
        )
    }

    pub fn new(
        base: &str,
        client_id: &str,
        client_secret: Secret,
        version: ApiVersion,
        http: reqwest::Client,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            client_secret,
            version,
            http,
            retry,
            token: TokenCache::default(),
        }
    }

    async fn bearer(&self) -> Result<String, JamfError> {
        self.token.get(|| self.request_token()).await
    }

    /// One token request to the API-client endpoint; the token is kept until a minute before
    /// Jamf says it expires.
    async fn request_token(&self) -> Result<(String, Duration), JamfError> {
        #[derive(serde::Deserialize)]
        struct Body {
            access_token: String,
            expires_in: Option<u64>,
        }
        let resp = self
            .http
            .post(format!("{}/api/oauth/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose()),
            ])
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| JamfError::Transport(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(JamfError::Token(resp.status().to_string()));
        }
        let b: Body = resp.json().await.map_err(|e| JamfError::Body(e.to_string()))?;
        let keep = Duration::from_secs(b.expires_in.unwrap_or(300).saturating_sub(60).max(10));
        Ok((b.access_token, keep))
    }

    /// GET with the token, retrying 429/5xx (honouring `Retry-After`) and one 401.
    pub async fn get(&self, path_and_query: &str) -> Result<Value, JamfError> {
        let url = format!("{}{path_and_query}", self.base);
        let (this, url) = (self, url.as_str());
        let resp = self
            .retry
            .run(
                "jamf",
                move || async move {
                    let token = this.bearer().await?;
                    Ok::<_, JamfError>(
                        this.http
                            .get(url)
                            .bearer_auth(token)
                            .timeout(Duration::from_secs(60))
                            .send()
                            .await,
                    )
                },
                move || this.token.forget(),
            )
            .await
            .map_err(|e| match e {
                RetryError::Caller(e) => e,
                RetryError::Transport { message, .. } => JamfError::Transport(message),
                RetryError::Exhausted { status, .. } => JamfError::Status(status),
            })?;
        match resp.status().as_u16() {
            200..=299 => base::retry::json_body(resp).await.map_err(|e| match e {
                BodyError::Transport(m) => JamfError::Transport(m),
                BodyError::Json(m) => JamfError::Body(m),
            }),
            s => Err(JamfError::Status(s)),
        }
    }

    /// One page of inventory.
    async fn page(&self, page: u32, size: u32) -> Result<Value, JamfError> {
        let sections: String = SECTIONS.iter().map(|s| format!("&section={s}")).collect();
        self.get(&format!(
            "{}?page={page}&page-size={size}&sort=id%3Aasc{sections}",
            self.version.path()
        ))
        .await
    }

    /// One computer (a webhook's targeted re-read).
    pub async fn computer(&self, id: &str) -> Result<Value, JamfError> {
        self.get(&format!("/api/v3/computers-inventory-detail/{id}")).await
    }

    pub fn version(&self) -> ApiVersion {
        self.version
    }
}

/// Parses one inventory record. Both `computers-inventory` versions use the same record shape for the fields read here
/// (Jamf's published schema: the last check-in is `general.lastContactTime` in v1 too).
pub fn computer_from(v: &Value, seen_at: i64) -> Result<Computer, SyncError> {
    let bad = |m: String| SyncError::Malformed(format!("computers-inventory: {m}"));
    let id = match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) | None => return Err(bad("a record without id".into())),
    };
    let general = v.get("general");
    let os = v.get("operatingSystem");
    let hw = v.get("hardware");
    let str_at = |o: Option<&Value>, k: &str| o.and_then(|o| o.get(k)).and_then(Value::as_str).map(str::to_string);
    let mut accounts = Vec::new();
    for a in v
        .get("localUserAccounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(username) = a.get("username").and_then(Value::as_str) else {
            return Err(bad(format!("computer {id}: an account without username")));
        };
        let kind = a
            .get("userAccountType")
            .and_then(Value::as_str)
            .and_then(AccountType::parse)
            .unwrap_or(AccountType::Local);
        accounts.push(LocalAccount {
            username: username.to_string(),
            account_type: kind,
            entra_user_id: a
                .get("userAzureActiveDirectoryId")
                .and_then(Value::as_str)
                .map(str::to_string),
            entra_device_id: a
                .get("computerAzureActiveDirectoryId")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            registration: RegistrationState::parse(
                a.get("azureActiveDirectoryId")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN"),
            ),
        });
    }
    Ok(Computer {
        jamf_id: id,
        udid: v.get("udid").and_then(Value::as_str).map(str::to_string),
        serial: str_at(hw, "serialNumber"),
        name: str_at(general, "name"),
        model: str_at(hw, "model"),
        os_version: str_at(os, "version"),
        os_build: str_at(os, "build"),
        managed: general
            .and_then(|g| g.get("remoteManagement"))
            .and_then(|r| r.get("managed"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        filevault: str_at(os, "fileVault2Status"),
        last_inventory: super::parse_time(general.and_then(|g| g.get("reportDate"))),
        last_contact: super::parse_time(general.and_then(|g| g.get("lastContactTime"))),
        seen_at,
        accounts,
    })
}

/// Reads the whole inventory.
pub async fn sync<S: InventoryWriter + SyncState + PostureStore + ?Sized>(
    jamf: &JamfClient,
    store: &S,
    page_size: u32,
) -> Result<JamfStats, SyncError> {
    let started = base::time::unix_now_i64();
    let mut stats = JamfStats::default();
    let mut page = 0;
    let mut ids = std::collections::HashSet::new();
    loop {
        let v = jamf
            .page(page, page_size)
            .await
            .map_err(|e| SyncError::Malformed(e.to_string()))?;
        let total = v
            .get("totalCount")
            .and_then(Value::as_u64)
            .ok_or_else(|| SyncError::Malformed("no totalCount".into()))?;
        let results = v
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| SyncError::Malformed("no results".into()))?;
        let computers = results
            .iter()
            .map(|r| computer_from(r, started))
            .collect::<Result<Vec<_>, _>>()?;
        ids.extend(computers.iter().map(|c| c.jamf_id.clone()));
        store.upsert_computers(&computers).await?;
        stats.pages += 1;
        stats.computers += computers.len() as u64;
        page += 1;
        if results.is_empty() || u64::from(page) * u64::from(page_size) >= total {
            break;
        }
    }
    // Computers Jamf no longer lists are gone.
    let mut after: Option<String> = None;
    loop {
        let batch = store.computers(after.as_deref(), 1000).await?;
        let Some(last) = batch.last().map(|c| c.jamf_id.clone()) else {
            break;
        };
        for c in batch.iter().filter(|c| !ids.contains(&c.jamf_id)) {
            store.remove_computer(&c.jamf_id).await?;
            stats.removed += 1;
        }
        after = Some(last);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as Jamf Pro's `computers-inventory` v1 documents it (and the jamf-pro-sdk models
    /// it): the last check-in is `general.lastContactTime`, as in v3.
    #[test]
    fn the_last_check_in_is_read_from_jamf_s_own_field_name() {
        let v1 = serde_json::json!({
            "id": "7",
            "udid": "55900BDC-347C-58B1-D249-F32244B11D30",
            "general": {
                "name": "Carol's MacBook",
                "lastContactTime": "2026-11-30T09:15:00.123Z",
                "reportDate": "2026-11-30T08:00:00Z",
                "remoteManagement": { "managed": true }
            },
            "hardware": { "serialNumber": "C02XYZ" },
            "operatingSystem": { "version": "15.1", "fileVault2Status": "ALL_ENCRYPTED" }
        });
        let c = computer_from(&v1, 1_796_040_000).unwrap();
        assert_eq!(c.last_contact, Some(1_796_030_100));
        assert_eq!(c.last_inventory, Some(1_796_025_600));
        assert!(c.managed);
        assert_eq!(c.filevault.as_deref(), Some("ALL_ENCRYPTED"));

        // The name the emulator used to invent for v1 is not Jamf's: it is not read.
        let mut invented = v1.clone();
        invented["general"].as_object_mut().unwrap().remove("lastContactTime");
        invented["general"]["lastContactDate"] = serde_json::json!("2026-11-30T09:15:00Z");
        assert_eq!(computer_from(&invented, 0).unwrap().last_contact, None);
    }
}
