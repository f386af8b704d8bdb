// Models by status, for listing what is ready or still loading.
//
// mode: write
// returns: nothing
CREATE INDEX model_status IF NOT EXISTS FOR (m:Model) ON (m.status)
