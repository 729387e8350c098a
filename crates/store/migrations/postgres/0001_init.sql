-- Portcullis store, PostgreSQL: the same logical schema as migrations/sqlite (0001-0004), for
-- several gateway nodes on one database. Times are Unix seconds (UTC). Join key between
-- sources: the Entra device id (entra_devices.device_id = managed_devices.azure_ad_device_id =
-- local_accounts.entra_device_id).

CREATE TABLE entra_devices (
    device_id               TEXT PRIMARY KEY,
    object_id               TEXT NOT NULL,
    display_name            TEXT,
    account_enabled         BOOLEAN,
    is_compliant            BOOLEAN,
    is_managed              BOOLEAN,
    trust_type              TEXT,
    operating_system        TEXT,
    os_version              TEXT,
    compliance_expiration   BIGINT,
    last_sign_in            BIGINT,
    removed                 BOOLEAN NOT NULL DEFAULT FALSE,
    seen_at                 BIGINT NOT NULL
);
CREATE UNIQUE INDEX entra_devices_object ON entra_devices(object_id);

CREATE TABLE managed_devices (
    intune_id               TEXT PRIMARY KEY,
    azure_ad_device_id      TEXT,
    compliance_state        TEXT NOT NULL,
    grace_end               BIGINT,
    management_agent        TEXT,
    last_sync               BIGINT,
    serial                  TEXT,
    upn                     TEXT,
    seen_at                 BIGINT NOT NULL
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
    managed                 BOOLEAN NOT NULL DEFAULT FALSE,
    filevault               TEXT,
    last_inventory          BIGINT,
    last_contact            BIGINT,
    seen_at                 BIGINT NOT NULL
);
CREATE INDEX computers_serial ON computers(serial);

CREATE TABLE local_accounts (
    jamf_id                 TEXT NOT NULL REFERENCES computers(jamf_id) ON DELETE CASCADE,
    username                TEXT NOT NULL,
    account_type            TEXT NOT NULL,
    entra_user_id           TEXT,
    entra_device_id         TEXT,
    registration            TEXT NOT NULL,
    PRIMARY KEY (jamf_id, username)
);
CREATE INDEX local_accounts_device ON local_accounts(entra_device_id);
CREATE INDEX local_accounts_user ON local_accounts(entra_user_id);

CREATE TABLE sync_cursors (
    source                  TEXT PRIMARY KEY,
    cursor                  TEXT NOT NULL,
    updated_at              BIGINT NOT NULL
);

CREATE TABLE sync_runs (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source                  TEXT NOT NULL,
    finished_at             BIGINT NOT NULL,
    ok                      BOOLEAN NOT NULL,
    error                   TEXT,
    detail                  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX sync_runs_source ON sync_runs(source, id);
CREATE INDEX sync_runs_success ON sync_runs(source, ok, finished_at);

CREATE TABLE inventory_history (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    jamf_id                 TEXT NOT NULL,
    username                TEXT NOT NULL,
    entra_device_id         TEXT,
    sent_at                 BIGINT NOT NULL,
    payload                 TEXT NOT NULL,
    result                  TEXT NOT NULL
);
CREATE INDEX inventory_history_computer ON inventory_history(jamf_id, id);

CREATE TABLE settings (
    key                     TEXT PRIMARY KEY,
    value                   TEXT NOT NULL,
    version                 BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);

CREATE TABLE audit (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                      BIGINT NOT NULL,
    actor                   TEXT NOT NULL,
    action                  TEXT NOT NULL,
    detail                  TEXT NOT NULL
);

CREATE TABLE sessions (
    id                      TEXT PRIMARY KEY,
    data                    TEXT NOT NULL,
    expires_at              BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);

-- Every write that can change a device's posture records the device id here, in the same
-- transaction and under one transaction-scoped advisory lock, so that ids commit in the order
-- they are given: a follower reading `id > cursor` never skips a late commit.
CREATE TABLE device_changes (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id               TEXT NOT NULL,
    at                      BIGINT NOT NULL
);

-- Leader leases on the database's clock.
CREATE TABLE leases (
    name                    TEXT PRIMARY KEY,
    holder                  TEXT NOT NULL,
    expires_at              BIGINT NOT NULL
);
