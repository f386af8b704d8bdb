// Assessments by partition, for finding what is left of a partition's assessments without a scan.
//
// mode: write
// returns: nothing
CREATE INDEX subcluster_assessment_partition IF NOT EXISTS FOR (a:Assessment) ON (a.partition)
