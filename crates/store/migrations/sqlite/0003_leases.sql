-- Leader leases: only the holder of "sync" runs the sync loop.
CREATE TABLE leases (
    name                    TEXT PRIMARY KEY,
    holder                  TEXT NOT NULL,
    expires_at              INTEGER NOT NULL
);
