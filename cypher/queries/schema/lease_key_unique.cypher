// One lease per model (graph '') or per activation graph of a model: the unique key is what makes a second
// writer's claim fail at once instead of both writing.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT lease_key_unique IF NOT EXISTS FOR (l:Lease) REQUIRE (l.model, l.graph) IS UNIQUE
