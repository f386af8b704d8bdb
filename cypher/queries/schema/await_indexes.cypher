// Wait until every index is online, so the first ingest after `db init` uses them.
//
// mode: autocommit
// returns: nothing
CALL db.awaitIndexes(300)
