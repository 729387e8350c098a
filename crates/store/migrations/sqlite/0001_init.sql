-- Portcullis store, SQLite. Times are Unix seconds (UTC). Join key between sources: the Entra
-- device id (entra_devices.device_id = managed_devices.azure_ad_device_id =
-- local_accounts.entra_device_id); never the display name or the serial alone.

CREATE TABLE entra_devices (
    device_id               TEXT PRIMARY KEY,          -- Entra deviceId (lower case)
    object_id               TEXT NOT NULL,             -- directory object id
    display_name            TEXT,
    account_enabled         INTEGER,
    is_compliant            INTEGER,
    is_managed              INTEGER,
    trust_type              TEXT,
    operating_system        TEXT,
    os_version              TEXT,
    compliance_expiration   INTEGER,
    last_sign_in            INTEGER,
    removed                 INTEGER NOT NULL DEFAULT 0, -- soft-deleted in Entra (@removed: changed)
    seen_at                 INTEGER NOT NULL            -- when the sync last confirmed this row
);
CREATE UNIQUE INDEX entra_devices_object ON entra_devices(object_id);

CREATE TABLE managed_devices (
    intune_id               TEXT PRIMARY KEY,
    azure_ad_device_id      TEXT,
    compliance_state        TEXT NOT NULL,
    grace_end               INTEGER,
    management_agent        TEXT,
    last_sync               INTEGER,
    serial                  TEXT,
    upn                     TEXT,
    seen_at                 INTEGER NOT NULL
);
CREATE INDEX managed_devices_aad ON managed_devices(azure_ad_device_id);

CREATE TABLE computers (
    jamf_id                 TEXT PRIMARY KEY,
    udid                    TEXT,
    serial                  TEXT,
    name                    TEXT,
    model                   TEXT,
    os_version              TEXT,
    os_build                TEXT,
    managed                 INTEGER NOT NULL DEFAULT 0,
    filevault               TEXT,
    last_inventory          INTEGER,
    last_contact            INTEGER,
    seen_at                 INTEGER NOT NULL
);
CREATE INDEX computers_serial ON computers(serial);

CREATE TABLE local_accounts (
    jamf_id                 TEXT NOT NULL REFERENCES computers(jamf_id) ON DELETE CASCADE,
    username                TEXT NOT NULL,
    account_type            TEXT NOT NULL,              -- LOCAL | MOBILE | NETWORK
    entra_user_id           TEXT,
    entra_device_id         TEXT,
    registration            TEXT NOT NULL,              -- ACTIVATED | DEACTIVATED | UNRESPONSIVE | UNKNOWN
    PRIMARY KEY (jamf_id, username)
);
CREATE INDEX local_accounts_device ON local_accounts(entra_device_id);
CREATE INDEX local_accounts_user ON local_accounts(entra_user_id);

CREATE TABLE sync_cursors (
    source                  TEXT PRIMARY KEY,
    cursor                  TEXT NOT NULL,
    updated_at              INTEGER NOT NULL
);

CREATE TABLE sync_runs (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    source                  TEXT NOT NULL,
    finished_at             INTEGER NOT NULL,
    ok                      INTEGER NOT NULL,
    error                   TEXT,
    detail                  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX sync_runs_source ON sync_runs(source, id);

CREATE TABLE inventory_history (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    jamf_id                 TEXT NOT NULL,
    username                TEXT NOT NULL,
    entra_device_id         TEXT,
    sent_at                 INTEGER NOT NULL,
    payload                 TEXT NOT NULL,
    result                  TEXT NOT NULL
);
CREATE INDEX inventory_history_computer ON inventory_history(jamf_id, id);

CREATE TABLE settings (
    key                     TEXT PRIMARY KEY,
    value                   TEXT NOT NULL,              -- JSON; secrets inside are encrypted
    version                 INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);

CREATE TABLE audit (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    at                      INTEGER NOT NULL,
    actor                   TEXT NOT NULL,
    action                  TEXT NOT NULL,
    detail                  TEXT NOT NULL               -- JSON, secrets masked
);

CREATE TABLE sessions (
    id                      TEXT PRIMARY KEY,
    data                    TEXT NOT NULL,
    expires_at              INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);
