-- Coldchain on PostgreSQL, schema 1: every tree of the daemon's key-value
-- store is a range of one table, ordered by (tree, k) as sled orders its keys
-- (bytea compares bytewise, then by length). Values are the same bytes sled
-- would hold (postcard or JSON, per tree; see daemon/DESIGN.md, "Storage").
CREATE TABLE kv (
    tree text  NOT NULL,
    k    bytea NOT NULL,
    v    bytea NOT NULL,
    PRIMARY KEY (tree, k)
);

-- Database-wide unique ids (sled's generate_id): alert ids, queue keys.
CREATE SEQUENCE kv_ids AS bigint MINVALUE 0 START WITH 0;
