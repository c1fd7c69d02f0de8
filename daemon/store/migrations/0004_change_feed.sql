-- 0004: a change feed the ERP can follow. Every offers and orders row carries change_seq,
-- taken from one sequence when the row is inserted or its content changes (an offer going
-- missing or coming back counts), never for an unchanged row. Numbers are taken under
-- one transaction-level lock, released only after commit, so they become visible in the
-- order they were taken: `WHERE change_seq > $last ORDER BY change_seq` never skips a
-- number that commits later. The lock is taken on a page's first changed row, so
-- unchanged pages (most of them, most of the time) never wait on it.
-- Triggers stamp the rows, so any writer (this release, the previous one after a
-- rollback, a manual UPDATE) keeps the feed true.

CREATE SEQUENCE {schema}.change_seq;

CREATE FUNCTION {schema}.next_change() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('emag-sync change feed {schema}', 0));
    RETURN nextval('{schema}.change_seq');
END
$$;

CREATE FUNCTION {schema}.stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_seq := {schema}.next_change();
    RETURN NEW;
END
$$;

ALTER TABLE {schema}.offers ADD COLUMN change_seq bigint;
ALTER TABLE {schema}.orders ADD COLUMN change_seq bigint;
UPDATE {schema}.offers SET change_seq = {schema}.next_change();
UPDATE {schema}.orders SET change_seq = {schema}.next_change();
ALTER TABLE {schema}.offers ALTER COLUMN change_seq SET DEFAULT {schema}.next_change(),
                            ALTER COLUMN change_seq SET NOT NULL;
ALTER TABLE {schema}.orders ALTER COLUMN change_seq SET DEFAULT {schema}.next_change(),
                            ALTER COLUMN change_seq SET NOT NULL;
CREATE UNIQUE INDEX offers_change_seq ON {schema}.offers (change_seq);
CREATE UNIQUE INDEX orders_change_seq ON {schema}.orders (change_seq);

CREATE TRIGGER offers_change BEFORE UPDATE ON {schema}.offers FOR EACH ROW
    WHEN (OLD.content_hash IS DISTINCT FROM NEW.content_hash
          OR OLD.missing_since IS DISTINCT FROM NEW.missing_since)
    EXECUTE FUNCTION {schema}.stamp_change();
CREATE TRIGGER orders_change BEFORE UPDATE ON {schema}.orders FOR EACH ROW
    WHEN (OLD.content_hash IS DISTINCT FROM NEW.content_hash)
    EXECUTE FUNCTION {schema}.stamp_change();
