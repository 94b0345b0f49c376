//! A throwaway PostgreSQL cluster for tests: one per test process, started
//! on first use with `initdb` and `pg_ctl`, listening only on a Unix socket
//! in its own temporary directory, with a fresh database per test.
//!
//! PostgreSQL refuses to run as root, and tests run as root in CI: then the
//! cluster runs as `nobody` (through `runuser`). A watcher started with the
//! cluster stops it and removes its directory once the test process is gone,
//! however it ended. Binaries are looked up in `TALLY_PG_BIN`, on `PATH`,
//! then in `/usr/lib/postgresql/*/bin` (Debian's place, not on `PATH`).
//! Missing binaries fail the test with a message saying what to install:
//! no test skips PostgreSQL.
//!
//! ```no_run
//! let url = tally_store::pg_test_cluster::database();
//! let store = tally_store::PostgresStore::open(&url).unwrap();
//! # drop(store);
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Cluster {
    /// Holds the socket and `data/`.
    dir: PathBuf,
    bin: PathBuf,
    root: bool,
    /// `-c name=value` options the server starts with.
    settings: String,
}

/// The directory holding `initdb` and `pg_ctl`.
// Test tooling, not the daemon: where PostgreSQL is installed is the test
// machine's business, which its environment says.
#[allow(clippy::disallowed_methods)]
fn bin_dir() -> PathBuf {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("TALLY_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_tools(&dir),
            "TALLY_PG_BIN={} holds no initdb and pg_ctl",
            dir.display()
        );
        return dir;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|d| has_tools(d)) {
        return dir;
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_tools(d))
        .collect();
    // The newest major version: directories are named by it.
    debian.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    debian.pop().unwrap_or_else(|| {
        panic!(
            "the PostgreSQL store's tests need PostgreSQL's initdb and pg_ctl, found neither on \
             PATH nor in /usr/lib/postgresql/*/bin: install PostgreSQL (Debian: apt-get install \
             postgresql) or set TALLY_PG_BIN to the directory that holds them"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command as the cluster's user: `nobody` when the tests run as root.
fn as_cluster_user(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str, log: Option<&Path>) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({c:?}): {e}"));
    if !out.status.success() {
        let server_log = log
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        panic!(
            "{what} failed ({}):\n{}\n{}\n{server_log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Cluster {
    /// Starts a cluster with `settings` (`-c name=value` options) added.
    fn start(settings: &str) -> Cluster {
        let bin = bin_dir();
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("tally-pg-")
            .tempdir()
            .expect("a temporary directory for the PostgreSQL cluster")
            .keep();
        if root {
            let owner = |flag: &str| -> u32 {
                let out = Command::new("id").args([flag, "nobody"]).output();
                out.ok()
                    .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                    .expect("the user nobody, to run PostgreSQL as (it refuses root)")
            };
            std::os::unix::fs::chown(&dir, Some(owner("-u")), Some(owner("-g")))
                .expect("giving the cluster's directory to nobody");
        }
        let data = dir.join("data");
        let mut initdb = as_cluster_user(root, &bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "tally", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C"]);
        run(initdb, "initdb", None);
        let cluster = Cluster {
            dir: dir.clone(),
            bin: bin.clone(),
            root,
            settings: settings.to_owned(),
        };
        cluster.pg_ctl_start();
        // Stop and remove the cluster when this process is gone, however
        // it ends (the test harness has no hook after the last test). The
        // watcher outlives this process by design: never waited for.
        let mut watcher = as_cluster_user(root, Path::new("/bin/sh"));
        watcher
            .arg("-c")
            .arg(
                "while [ -d /proc/$0 ]; do sleep 1; done; \
                 \"$1\" -D \"$2\" -m immediate -w stop >/dev/null 2>&1; rm -rf \"$3\"",
            )
            .arg(std::process::id().to_string())
            .arg(bin.join("pg_ctl"))
            .arg(&data)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .expect("starting the cluster's watcher");
        cluster
    }

    /// Starts the server on the cluster's data directory (again).
    fn pg_ctl_start(&self) {
        let (data, log) = (self.dir.join("data"), self.dir.join("server.log"));
        let mut start = as_cluster_user(self.root, &self.bin.join("pg_ctl"));
        // No TCP at all: the socket lives in the cluster's own directory,
        // so clusters of parallel test processes never meet.
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-k {} -c listen_addresses='' -c max_connections=300 {}",
                self.dir.display(),
                self.settings
            ))
            .arg("start");
        run(start, "pg_ctl start", Some(&log));
    }

    /// Stops the server: `fast` disconnects every client and shuts down
    /// cleanly, as an operator's restart does; `immediate` aborts.
    fn pg_ctl_stop(&self, mode: &str) {
        let mut stop = as_cluster_user(self.root, &self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        run(stop, "pg_ctl stop", Some(&self.dir.join("server.log")));
    }

    fn new_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("tally_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut admin = postgres::Client::connect(&self.admin_url(), postgres::NoTls)
            .expect("connecting to the test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creating a test database");
        name
    }

    fn url(&self, name: &str) -> String {
        format!("postgresql://tally@/{name}?host={}", self.dir.display())
    }

    fn admin_url(&self) -> String {
        format!("host={} user=tally dbname=postgres", self.dir.display())
    }
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(NOT_DURABLE))
}

/// What the tests' clusters start with: fsync off, since a throwaway
/// cluster need not survive a power cut.
const NOT_DURABLE: &str = "-c fsync=off";

/// A new, empty database of a second cluster of this process that keeps
/// PostgreSQL's durable defaults (fsync on, each commit flushed), as a
/// deployed server does: what benchmarks measure. Returned as a
/// `postgresql://` URL and as a connection string.
pub fn durable_database() -> (String, String) {
    static DURABLE: OnceLock<Cluster> = OnceLock::new();
    let cluster = DURABLE.get_or_init(|| Cluster::start(""));
    let name = cluster.new_database();
    (
        cluster.url(&name),
        format!("host={} user=tally dbname={name}", cluster.dir.display()),
    )
}

/// The connection string of a new, empty database of this process's
/// cluster (started on first use).
pub fn database() -> String {
    let cluster = cluster();
    let name = cluster.new_database();
    format!("host={} user=tally dbname={name}", cluster.dir.display())
}

/// The directory of the cluster's Unix socket (`?host=` of a URL).
pub fn socket_dir() -> PathBuf {
    cluster().dir.clone()
}

/// [`database`] as a `postgresql://` URL, the form `[store] url` takes.
pub fn database_url() -> String {
    let conninfo = database();
    let name = conninfo
        .rsplit_once("dbname=")
        .map(|(_, name)| name.to_owned())
        .expect("database() names the database");
    format!(
        "postgresql://tally@/{name}?host={}",
        cluster().dir.display()
    )
}

/// A cluster of its own, for a test that stops and starts PostgreSQL under
/// running daemons: the process's shared cluster ([`database`]) serves
/// other tests at the same time and must stay up. Stopped and removed when
/// dropped (and by its watcher should the process end first).
///
/// ```no_run
/// let pg = tally_store::pg_test_cluster::OwnCluster::start();
/// let url = pg.database_url();
/// pg.stop();
/// pg.start_again();
/// # drop(url);
/// ```
pub struct OwnCluster {
    cluster: Cluster,
}

impl OwnCluster {
    pub fn start() -> OwnCluster {
        OwnCluster {
            cluster: Cluster::start(NOT_DURABLE),
        }
    }

    /// A new, empty database of this cluster as a `postgresql://` URL.
    pub fn database_url(&self) -> String {
        let name = self.cluster.new_database();
        self.cluster.url(&name)
    }

    /// Stops the server as an operator's `pg_ctl restart` does (`-m fast`:
    /// every connection is closed, nothing waits for clients).
    pub fn stop(&self) {
        self.cluster.pg_ctl_stop("fast");
    }

    /// Starts the stopped server on the same data directory and socket.
    pub fn start_again(&self) {
        self.cluster.pg_ctl_start();
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let mut stop = as_cluster_user(self.cluster.root, &self.cluster.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.cluster.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.cluster.dir);
    }
}
