-- Where a local run's processes live, so a launcher that restarts on the same machine can end the
-- processes of runs its previous life left behind (they cannot be adopted: their output pipes are gone).

ALTER TABLE leases
    ADD COLUMN host    text,
    ADD COLUMN boot_id text,
    ADD COLUMN pgid    integer;
