-- At most one running job per kind and computer (NULL: every computer): two nodes asked for the
-- same Send Update at once start one job between them (JobStore::start_job). Duplicates from
-- before this rule keep their newest; the older ones read as interrupted.
UPDATE jobs SET status = 'interrupted', finished_at = started_at
WHERE status = 'running' AND EXISTS (
    SELECT 1 FROM jobs AS newer
    WHERE newer.status = 'running' AND newer.kind = jobs.kind
      AND COALESCE(newer.computer, '') = COALESCE(jobs.computer, '')
      AND (newer.started_at > jobs.started_at OR (newer.started_at = jobs.started_at AND newer.id > jobs.id))
);
CREATE UNIQUE INDEX jobs_one_running ON jobs (kind, COALESCE(computer, '')) WHERE status = 'running';
