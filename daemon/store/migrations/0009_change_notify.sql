-- 0009: the change feed's NOTIFY comes from the tables, as its numbers do (0004): once per
-- statement that wrote rows, with the highest change number per account, whichever writer
-- made it. It replaces a clause repeated in each writing query. A notification is a hint
-- to read `change_seq > last`, never the data itself.

CREATE FUNCTION {schema}.announce_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('emag_sync_changes',
                      json_build_object('account', account, 'resource', TG_ARGV[0], 'change_seq', last)::text)
       FROM (SELECT account, max(change_seq) AS last FROM written GROUP BY account) c;
    RETURN NULL;
END
$$;

CREATE TRIGGER offers_announce_insert AFTER INSERT ON {schema}.offers REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.announce_changes('offers');
CREATE TRIGGER offers_announce_update AFTER UPDATE ON {schema}.offers REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.announce_changes('offers');
CREATE TRIGGER orders_announce_insert AFTER INSERT ON {schema}.orders REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.announce_changes('orders');
CREATE TRIGGER orders_announce_update AFTER UPDATE ON {schema}.orders REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.announce_changes('orders');
