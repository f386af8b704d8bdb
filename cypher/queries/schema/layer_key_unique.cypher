// One layer per (model, index); also the index behind every per-model layer lookup.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT layer_key_unique IF NOT EXISTS FOR (l:Layer) REQUIRE (l.model, l.index) IS UNIQUE
