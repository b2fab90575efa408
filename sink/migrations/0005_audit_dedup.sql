-- The sink now writes the audit tables, each batch under a deterministic
-- insert_deduplication_token: give them the deduplication window the fact tables have, so a
-- retried insert is a no-op (without it a non-replicated MergeTree inserts it again, which
-- FINAL would still collapse). A new migration rather than an edit of 0004, which existing
-- databases already applied; MODIFY SETTING is idempotent.
ALTER TABLE {db}.load_batches MODIFY SETTING non_replicated_deduplication_window = 1000;

ALTER TABLE {db}.extraction_runs MODIFY SETTING non_replicated_deduplication_window = 1000;
