-- Delivery events lose their primary-key btree, which cost an index insert (a WAL record and a
-- descent) for every event written, about one per message sent.
--
-- `id` stays unique: it comes from the table's own sequence and nothing else writes it. Events
-- are only appended, so ids grow with the table's pages, and a block-range (BRIN) index serves
-- reading the stream from a cursor (`WHERE id > $cursor ORDER BY id`) at almost no cost per
-- insert. A recipient's history is read through `delivery_events_by_recipient`.
ALTER TABLE delivery_events DROP CONSTRAINT delivery_events_pkey;
CREATE INDEX delivery_events_by_id ON delivery_events USING brin (id);
