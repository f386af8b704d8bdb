// A model's name is unique in the store.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT model_name_unique IF NOT EXISTS FOR (m:Model) REQUIRE m.name IS UNIQUE
