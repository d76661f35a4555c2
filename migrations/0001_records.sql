-- Every record of the store, as on sled: one row per key of each tree (videos, jobs, keys, users,
-- usernames, sessions, tokens, invites, tus, webhooks, webhook_deliveries, webhook_due, live),
-- the value the record's JSON (a user id for usernames). Keys compare bytewise, as sled's do.
CREATE TABLE cascade_kv (
    tree TEXT NOT NULL,
    k BYTEA NOT NULL,
    v BYTEA NOT NULL,
    PRIMARY KEY (tree, k)
);

-- Ids that only grow (job sequence numbers, webhook deliveries), as sled's generate_id.
CREATE SEQUENCE cascade_ids;
