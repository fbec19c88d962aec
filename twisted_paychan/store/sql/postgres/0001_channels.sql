-- The channel tables, as SQLite's (store/sqlite.py), in PostgreSQL's types. seq keeps the
-- order records were added in (server_channels() and client_channels() list oldest first).
CREATE TABLE server_channels (
    contract_txid   BYTEA PRIMARY KEY,
    version         INTEGER NOT NULL,
    contract        BYTEA NOT NULL,
    value           BIGINT NOT NULL,
    expiry          BIGINT NOT NULL,
    server_key      BYTEA NOT NULL,
    client_key      BYTEA NOT NULL,
    best_value      BIGINT NOT NULL,
    best_signature  BYTEA,
    client_output   BYTEA,
    state           TEXT NOT NULL,
    settlement_tx   BYTEA,
    note            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    seq             BIGINT GENERATED ALWAYS AS IDENTITY
);

CREATE TABLE client_channels (
    contract_txid   BYTEA PRIMARY KEY,
    server_id       BYTEA NOT NULL,
    version         INTEGER NOT NULL,
    contract        BYTEA NOT NULL,
    refund          BYTEA NOT NULL,
    client_key      BYTEA NOT NULL,
    server_key      BYTEA NOT NULL,
    value           BIGINT NOT NULL,
    client_change   BIGINT NOT NULL,
    expiry          BIGINT NOT NULL,
    refund_fees     BIGINT NOT NULL,
    state           TEXT NOT NULL,
    close_tx        BYTEA,
    note            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    seq             BIGINT GENERATED ALWAYS AS IDENTITY
);

CREATE INDEX client_channels_server ON client_channels (server_id);
