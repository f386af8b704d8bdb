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
        String password = Files.readString(Path.of(args[2])).strip();
        String statement = Files.readString(Path.of(args[3]));
        dbms.database("system").executeTransactionally(statement, Map.of("password", password));
        dbms.database("neo4j").executeTransactionally("RETURN 1");
        System.out.println("neuronmap: neo4j ready");
        System.out.flush();
        boolean watchStdin = args.length > 4 && args[4].equals("--exit-on-stdin-close");
        if (watchStdin) {
            while (System.in.read() != -1) { }
            System.exit(0);
        }
        Thread.currentThread().join();
    }
}
