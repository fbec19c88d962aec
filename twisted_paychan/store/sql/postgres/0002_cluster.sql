-- Several servers on one database (doc/cluster.md).
--
-- owner_node, owner_token: the fencing token of the connection that may write a channel's b.
-- A node claims a channel by incrementing owner_token in the statement that stores the claimer's
-- first payment; every later payment of that connection is written only WHERE owner_token is
-- still the one it got, so a node whose channel was taken over fails its next write.
-- duty_node: the node whose timers and watches look after the channel (settle before expiry,
-- contract watches, stuck settlements). A new channel's is the node that stored it (the
-- session's paychan.node setting); an orphan's is claimed by a live node (cluster_nodes).
ALTER TABLE server_channels
    ADD COLUMN owner_node TEXT,
    ADD COLUMN owner_token BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN duty_node TEXT DEFAULT NULLIF(current_setting('paychan.node', true), '');

CREATE INDEX server_channels_duty ON server_channels (duty_node);

-- The live nodes: each renews its lease_until; a node whose lease has passed is dead for the
-- others, and its channels' duties are taken over.
CREATE TABLE cluster_nodes (
    node_id      TEXT PRIMARY KEY,
    lease_until  TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Where each server channel key sits in the tree of the seed every node is given: the path,
-- never the key. Indices come from one sequence, so two nodes never hand out the same key.
CREATE SEQUENCE channel_key_index;

CREATE TABLE channel_keys (
    public_key   BYTEA PRIMARY KEY,
    path         TEXT NOT NULL,
    node_id      TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Facts every node must agree on: the seed's fingerprint (a node started with other words
-- would hand out keys the others cannot derive).
CREATE TABLE cluster_meta (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
