-- Facts about the database itself. `epoch` is made once, when the database is created: a node
-- that finds another epoch than the one it followed is looking at another (or a re-created)
-- database and drops every cached posture.
CREATE TABLE store_meta (
    key                     TEXT PRIMARY KEY,
    value                   TEXT NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('epoch', lower(hex(randomblob(16))));
