-- Background jobs started through the admin API (Send Update), readable from every node.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    node TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    computer TEXT,
    result TEXT
);
CREATE INDEX jobs_started_at ON jobs (started_at);
CREATE INDEX jobs_node_status ON jobs (node, status);
