// Jobs by status, so a worker finds the queued ones without scanning all jobs.
//
// mode: write
// returns: nothing
CREATE INDEX job_status IF NOT EXISTS FOR (j:Job) ON (j.status)
