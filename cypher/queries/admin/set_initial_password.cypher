// Set the generated password of the managed local server's 'neo4j' user (run by service/runtime/Launcher.java on
// the system database at every start, so the stored password file is always the one that works).
//
// mode: system
// param password: str   the generated password, 8 characters or more
// returns: nothing
ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED
