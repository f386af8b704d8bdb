"""Every read and write of Neo4j on the service side, and the managed local server."""
