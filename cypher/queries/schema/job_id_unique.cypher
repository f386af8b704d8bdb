// A clustering job's id is unique.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT job_id_unique IF NOT EXISTS FOR (j:Job) REQUIRE j.id IS UNIQUE
