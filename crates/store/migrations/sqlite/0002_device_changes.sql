-- Every write that can change a device's posture records the device id here, in the same
-- transaction, so that every node's posture cache learns of it within its poll interval.
CREATE TABLE device_changes (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id               TEXT NOT NULL,
    at                      INTEGER NOT NULL
);
