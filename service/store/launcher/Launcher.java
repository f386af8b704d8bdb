// Starts an embedded Neo4j Community DBMS with its Bolt connector, for neuronmap's managed local server.
// Run as a single source file (java -cp 'lib/*' Launcher.java ...), so there is no compile step.
//
// args: HOME CONF PASSWORD_FILE PASSWORD_STATEMENT
//   HOME                the server's home; data lives in HOME/data
//   CONF                a neo4j.conf written by neuronmap (bolt address, memory, auth)
//   PASSWORD_FILE       the generated password (owner-only file)
//   PASSWORD_STATEMENT  a .cypher file run on the system database to set that password
// Prints "neuronmap: neo4j ready" once the default database answers; stops on SIGTERM or when stdin closes
// (the test suite keeps stdin open, so a crashed test run never leaves a server behind).
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;

public class Launcher {
    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]);
        DatabaseManagementService dbms =
                new DatabaseManagementServiceBuilder(home).loadPropertiesFromFile(Path.of(args[1])).build();
        Runtime.getRuntime().addShutdownHook(new Thread(dbms::shutdown));
        try {
            String password = Files.readString(Path.of(args[2])).strip();
            String statement = Files.readString(Path.of(args[3]));
            setPassword(dbms, statement, password);
            dbms.database("neo4j").executeTransactionally("RETURN 1");
        } catch (Exception e) {
            // The DBMS's own threads would keep the JVM alive without a ready line: exit, so the caller sees why.
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("neuronmap: neo4j ready");
        System.out.flush();
        boolean watchStdin = args.length > 4 && args[4].equals("--exit-on-stdin-close");
        if (watchStdin) {
            while (System.in.read() != -1) { }
            System.exit(0);
        }
        Thread.currentThread().join();
    }

    // At every start, so that the password file is always the one that works. On a restart the password usually
    // is that one already, and Neo4j refuses to "change" a password to itself: that refusal means it is set.
    static void setPassword(DatabaseManagementService dbms, String statement, String password) {
        try {
            dbms.database("system").executeTransactionally(statement, Map.of("password", password));
        } catch (RuntimeException e) {
            for (Throwable cause = e; cause != null; cause = cause.getCause()) {
                String message = cause.getMessage();
                if (message != null && message.contains("Old password and new password cannot be the same")) {
                    return;
                }
            }
            throw e;
        }
    }
}
