-- The posture of every device read from the store asks for each source's last successful
-- run; without this index that read scanned the whole (ever-growing) run table.
CREATE INDEX sync_runs_success ON sync_runs(source, ok, finished_at);
