// An assessment's id (of the importance or coherence run that scored sub-clusters) is unique.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT subcluster_assessment_id_unique IF NOT EXISTS FOR (a:Assessment) REQUIRE a.id IS UNIQUE
