"""The only database writers in loaders: a ModelGraph or an activation graph into Neo4j, all-or-nothing."""
