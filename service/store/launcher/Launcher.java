// Starts an embedded Neo4j Community DBMS with its Bolt connector, for neuronmap's managed local server.
// Run as a single source file (java -cp 'lib/*' Launcher.java ...), so there is no compile step.
//
// args: HOME CONF PASSWORD_FILE PASSWORD_STATEMENT [--exit-on-stdin-close] [--http]
//   HOME                  the server's home; data lives in HOME/data, Neo4j's own log in HOME/logs/debug.log
//   CONF                  a neo4j.conf written by neuronmap (addresses, memory, auth)
//   PASSWORD_FILE         the generated password (owner-only file)
//   PASSWORD_STATEMENT    a .cypher file run on the system database to set that password
//   --exit-on-stdin-close stop when stdin closes (the test suite keeps stdin open, so a crashed test run never
//                         leaves a server behind)
//   --http                run the full server (CommunityBootstrapper) instead of the bare DBMS: it adds the web
//                         server, so the HTTP API (and Neo4j Browser, if its jar is on the class path) answer on
//                         the address CONF gives
// Prints "neuronmap: neo4j ready" once the default database answers; stops on SIGTERM.
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.server.CommunityBootstrapper;

public class Launcher {
    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]);
        Path conf = Path.of(args[1]);
        List<String> flags = Arrays.asList(args).subList(4, args.length);
        DatabaseManagementService dbms;
        if (flags.contains("--http")) {
            CommunityBootstrapper server = new CommunityBootstrapper();
            int code = server.start(home, conf, Map.of(), false, false);  // adds its own shutdown hook
            if (code != 0) {
                System.err.println("neuronmap: the Neo4j server did not start (code " + code + "); see logs/");
                System.exit(code);
            }
            dbms = server.getDatabaseManagementService();
        } else {
            dbms = new DatabaseManagementServiceBuilder(home).loadPropertiesFromFile(conf).build();
            DatabaseManagementService started = dbms;
            Runtime.getRuntime().addShutdownHook(new Thread(started::shutdown));
        }
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
        if (flags.contains("--exit-on-stdin-close")) {
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
