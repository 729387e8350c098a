-- Each takeover of a lease increments its term; a fenced write names the term it was made
-- under and is refused once another holder took the lease over.
ALTER TABLE leases ADD COLUMN term BIGINT NOT NULL DEFAULT 0;
