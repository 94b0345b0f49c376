//! Shared helpers: locating the built binary and plugins, writing configs,
//! starting a daemon on a free port with a temporary data directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `tallyd` under test.
pub fn tallyd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tallyd"))
}

/// The demo binary, which cargo builds beside `tallyd` (`cargo xtask test`
/// builds the workspace first).
pub fn tally_demo() -> PathBuf {
    plugin_dir().join(format!("tally-demo{}", std::env::consts::EXE_SUFFIX))
}

/// Where cargo put the bundled plugin libraries: beside `tallyd`.
pub fn plugin_dir() -> PathBuf {
    tallyd()
        .parent()
        .expect("tallyd has a directory")
        .to_path_buf()
}

/// The file name of a library built from crate `lib_name` on this platform.
pub fn lib_file(lib_name: &str) -> String {
    format!(
        "{}{lib_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// A bundled plugin library, checked to exist and to be newer than the SDK
/// sources, so that a stale build is not silently tested.
pub fn bundled_plugin(lib_name: &str) -> PathBuf {
    let path = plugin_dir().join(lib_file(lib_name));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds the plugin libraries first",
        path.display()
    );
    path
}

/// A test fixture plugin from `tests/fixtures` (built by `cargo xtask test`).
pub fn fixture_plugin(lib_name: &str) -> PathBuf {
    let dir = std::env::var_os("TALLY_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            plugin_dir()
                .parent()
                .expect("target dir")
                .join("fixtures")
                .join("debug")
        });
    let path = dir.join(lib_file(lib_name));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds tests/fixtures first",
        path.display()
    );
    path
}

/// A private plugin directory holding copies of the given libraries, so that
/// each test controls exactly what the daemon finds.
pub fn plugin_dir_with(dir: &Path, libs: &[PathBuf]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    set_mode(dir, 0o755);
    for lib in libs {
        let to = dir.join(lib.file_name().unwrap());
        std::fs::copy(lib, &to).unwrap();
        set_mode(&to, 0o755);
    }
    dir.to_path_buf()
}

pub fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `tallyd` with arguments and waits for it.
pub fn run_tallyd(args: &[&str]) -> Output {
    Command::new(tallyd())
        .args(args)
        .env_remove("TALLY_CONFIG")
        .output()
        .expect("tallyd runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `tallyd run` on a free loopback port. Killed on drop.
pub struct TestDaemon {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<String>>,
}

impl TestDaemon {
    /// Starts `tallyd run --config <config>` and waits until `/healthz` answers.
    pub fn start(config: &Path, port: u16) -> TestDaemon {
        Self::start_with_env(config, port, &[])
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        get(&format!("{}{path}", self.base))
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `check` until it returns true, or fails after `secs` with the log.
    pub fn wait_for(&self, what: &str, secs: u64, mut check: impl FnMut(&TestDaemon) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of one sample of `/metrics`, if present.
    pub fn metric(&self, name_and_labels: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
        }
        self.child.wait().unwrap()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for the tests: every status is an answer (not an error),
/// redirects are not followed, and no connection is kept between requests, so
/// that a test that kills and restarts the daemon never reuses a dead socket.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `GET url`: the status and the body.
pub fn get(url: &str) -> Result<(u16, String), ureq::Error> {
    request("GET", url, &[], "")
}

/// `POST url` with an empty body.
pub fn post(url: &str, headers: &[(&str, &str)]) -> Result<(u16, String), ureq::Error> {
    request("POST", url, headers, "")
}

/// Any request with headers and a text body: the status and the body.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), ureq::Error> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    // An empty body is no body: a GET carries no `Content-Length: 0`.
    let mut response = if body.is_empty() {
        agent().run(builder.body(())?)?
    } else {
        agent().run(builder.body(body.to_owned())?)?
    };
    let status = response.status().as_u16();
    // Reports and observation pages may exceed ureq's default 10 MB cap.
    let text = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()?;
    Ok((status, text))
}

// ---------------------------------------------------------------------------
// Helpers for the plugin and bad-input tests.

/// Runs `tallyd` with arguments and extra environment variables, and waits for it.
pub fn run_tallyd_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(tallyd())
        .args(args)
        .env_remove("TALLY_CONFIG")
        .envs(envs.iter().copied())
        .output()
        .expect("tallyd runs")
}

/// The exit code, or a failure naming the signal and the output.
pub fn exit_code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| {
        panic!(
            "tallyd was killed by a signal: {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status,
            stdout(o),
            stderr(o)
        )
    })
}

/// A path as a TOML literal string (no escapes are interpreted inside `'...'`).
pub fn toml_path(path: &Path) -> String {
    let text = path.display().to_string();
    assert!(
        !text.contains('\''),
        "{text} cannot be a TOML literal string"
    );
    format!("'{text}'")
}

/// Writes a configuration file into `dir` and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// One sample of a Prometheus text exposition: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the samples of a Prometheus text exposition (comments skipped).
/// Label values are unescaped; the order of labels does not matter.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let mut labels = std::collections::BTreeMap::new();
                let mut chars = line[open + 1..].char_indices().peekable();
                let mut end = None;
                loop {
                    // Skip separators, then read `key="value"`.
                    while let Some((_, c)) = chars.peek() {
                        if *c == ',' || *c == ' ' {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    match chars.peek() {
                        Some((i, '}')) => {
                            end = Some(open + 1 + i + 1);
                            break;
                        }
                        None => break,
                        _ => {}
                    }
                    let mut key = String::new();
                    for (_, c) in chars.by_ref() {
                        if c == '=' {
                            break;
                        }
                        key.push(c);
                    }
                    assert_eq!(
                        chars.next().map(|(_, c)| c),
                        Some('"'),
                        "bad sample: {line}"
                    );
                    let mut value = String::new();
                    while let Some((_, c)) = chars.next() {
                        match c {
                            '\\' => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(other) => value.push(other),
                                None => break,
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(key.trim().to_owned(), value);
                }
                let end = end.unwrap_or_else(|| panic!("bad sample: {line}"));
                (&line[..open], labels, &line[end..])
            }
            None => {
                let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
                (name, std::collections::BTreeMap::new(), rest)
            }
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad sample value: {line}"));
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// The value of the first sample named `name` whose labels include all of `labels`.
pub fn find_sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
}

impl TestDaemon {
    /// Like [`TestDaemon::start`], with extra environment variables for the
    /// daemon (e.g. the values of `${env:...}` references, or `RUST_LOG`).
    pub fn start_with_env(config: &Path, port: u16, envs: &[(&str, &str)]) -> TestDaemon {
        let mut child = Command::new(tallyd())
            .args(["run", "--config"])
            .arg(config)
            .env_remove("TALLY_CONFIG")
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tallyd starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut daemon = TestDaemon {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // `try_wait` also sees a daemon that exited and is not reaped yet.
            if let Ok(Some(status)) = daemon.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("tallyd exited early with {status}:\n{}", daemon.log());
            }
            if get(&format!("{}/healthz", daemon.base)).is_ok_and(|(s, _)| s == 200) {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "tallyd did not answer /healthz:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The samples of `/metrics`.
    pub fn samples(&self) -> Vec<Sample> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        parse_metrics(&body)
    }

    /// The value of the sample `name` whose labels include `labels`, in any order.
    pub fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        find_sample(&self.samples(), name, labels)
    }

    /// One source of `/api/v1/sources`, by id.
    pub fn source(&self, id: &str) -> serde_json::Value {
        let all = self.get_json("/api/v1/sources");
        all["sources"]
            .as_array()
            .unwrap_or_else(|| panic!("/api/v1/sources has no sources list: {all}"))
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("source {id} is not in /api/v1/sources: {all}"))
    }

    /// A source's run count for one result (`success`, `error`, `timeout`, `panic`).
    pub fn runs(&self, id: &str, result: &str) -> u64 {
        self.source(id)["runs"][result].as_u64().unwrap_or(0)
    }
}

/// The days of a source's `last_run.uncovered` in `/api/v1/sources`
/// (`YYYY-MM-DD` or `YYYY-MM-DD..YYYY-MM-DD` each), in order.
pub fn last_run_uncovered(source: &serde_json::Value) -> Vec<chrono::NaiveDate> {
    let mut days = Vec::new();
    for range in source["last_run"]["uncovered"]
        .as_array()
        .unwrap_or_else(|| panic!("no last_run.uncovered: {source:#}"))
    {
        let text = range.as_str().unwrap();
        let (a, b) = text.split_once("..").unwrap_or((text, text));
        let (a, b): (chrono::NaiveDate, chrono::NaiveDate) =
            (a.parse().unwrap(), b.parse().unwrap());
        days.extend(a.iter_days().take_while(|d| *d <= b));
    }
    days
}

// ---------------------------------------------------------------------------
// Test configurations: one builder for the `[daemon]` table, the unit tree,
// the indicators and the rest, and one way to start a daemon on it.

/// A test's temporary directory with its private plugin directory
/// (`<dir>/plugins`), removed when dropped. Its path is canonical, so that
/// the paths the daemon canonicalizes (plugin libraries) or prints (the
/// configuration file in an error) compare equal to the ones a test builds.
pub struct TestDir {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub plugins: PathBuf,
}

impl TestDir {
    /// A fresh directory whose plugin directory holds copies of `libs`.
    pub fn new(libs: &[PathBuf]) -> TestDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let plugins = plugin_dir_with(&dir.join("plugins"), libs);
        TestDir {
            _tmp: tmp,
            dir,
            plugins,
        }
    }

    /// A configuration whose daemon keeps its data in `<dir>/data` and loads
    /// plugins from this directory's plugin directory.
    pub fn config(&self) -> TestConfig {
        TestConfig::new(&self.dir, &self.plugins)
    }
}

/// A configuration file under construction. `[daemon]` gets `listen` on a
/// free loopback port, `data_dir` and `plugin_dirs`, then any extra lines;
/// units and indicators follow, then the rest (sources, targets, reports) as
/// TOML text, in the order added.
#[derive(Clone)]
pub struct TestConfig {
    dir: PathBuf,
    port: Option<u16>,
    listen: Option<String>,
    data_dir: PathBuf,
    plugin_dirs: Vec<PathBuf>,
    daemon: String,
    units: String,
    indicators: String,
    rest: String,
}

impl TestConfig {
    /// A configuration written into `dir`, with data in `<dir>/data` and
    /// the plugins of `plugins`.
    pub fn new(dir: impl AsRef<Path>, plugins: impl AsRef<Path>) -> TestConfig {
        let (dir, plugins) = (dir.as_ref(), plugins.as_ref());
        TestConfig {
            dir: dir.to_path_buf(),
            port: Some(free_port()),
            listen: None,
            data_dir: dir.join("data"),
            plugin_dirs: vec![plugins.to_path_buf()],
            daemon: String::new(),
            units: String::new(),
            indicators: String::new(),
            rest: String::new(),
        }
    }

    /// No `listen` key: for configurations only `collect`, `report` or
    /// `check` read, which never listen.
    pub fn without_listen(mut self) -> Self {
        self.port = None;
        self.listen = None;
        self
    }

    /// Listens on `port` (a restart on the same address, or a second
    /// daemon on the same store).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self.listen = None;
        self
    }

    /// Listens on `addr` exactly as written (e.g. a non-loopback address
    /// that `check` must refuse); the daemon cannot be started by [`TestConfig::start`].
    pub fn listen(mut self, addr: &str) -> Self {
        self.port = None;
        self.listen = Some(addr.to_owned());
        self
    }

    /// Loads plugins from these directories, in this order, instead.
    pub fn plugin_dirs(mut self, dirs: &[&Path]) -> Self {
        self.plugin_dirs = dirs.iter().map(|d| d.to_path_buf()).collect();
        self
    }

    /// Another data directory.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = dir.to_path_buf();
        self
    }

    /// Extra lines of the `[daemon]` table, e.g. `api_token = "..."`.
    pub fn daemon(mut self, lines: &str) -> Self {
        push_lines(&mut self.daemon, lines);
        self
    }

    /// A unit.
    pub fn unit(self, id: &str, name: &str) -> Self {
        self.unit_with(id, name, "")
    }

    /// A unit with more keys (e.g. `headcount = 4`).
    pub fn unit_with(mut self, id: &str, name: &str, more: &str) -> Self {
        self.units
            .push_str(&format!("[[units]]\nid = \"{id}\"\nname = \"{name}\"\n"));
        push_lines(&mut self.units, more);
        self
    }

    /// The unit most tests collect for: `county`, 某县.
    pub fn county(self) -> Self {
        self.unit("county", "某县")
    }

    /// An indicator.
    pub fn indicator(self, id: &str, name: &str, kind: &str, unit: &str) -> Self {
        self.indicator_with(id, name, kind, unit, "")
    }

    /// An indicator with more keys (e.g. `per_capita = true`).
    pub fn indicator_with(
        mut self,
        id: &str,
        name: &str,
        kind: &str,
        unit: &str,
        more: &str,
    ) -> Self {
        self.indicators.push_str(&format!(
            "[[indicators]]\nid = \"{id}\"\nname = \"{name}\"\nkind = \"{kind}\"\nunit = \"{unit}\"\n"
        ));
        push_lines(&mut self.indicators, more);
        self
    }

    /// The indicator most tests count: `meetings`, 会议次数, in 次.
    pub fn meetings(self) -> Self {
        self.indicator("meetings", "会议次数", "count", "次")
    }

    /// Any further TOML: `[[sources]]`, `[[targets]]`, `[[reports]]`, ...
    pub fn toml(mut self, text: &str) -> Self {
        self.rest.push('\n');
        self.rest.push_str(text.trim_start_matches('\n'));
        if !self.rest.ends_with('\n') {
            self.rest.push('\n');
        }
        self
    }

    /// The port the daemon listens on.
    pub fn port(&self) -> u16 {
        self.port.expect("this configuration has no listen address")
    }

    /// The daemon's data directory.
    pub fn data(&self) -> &Path {
        &self.data_dir
    }

    /// The configuration's text.
    pub fn text(&self) -> String {
        let mut text = String::from("[daemon]\n");
        if let Some(port) = self.port {
            text.push_str(&format!("listen = \"127.0.0.1:{port}\"\n"));
        } else if let Some(addr) = &self.listen {
            text.push_str(&format!("listen = \"{addr}\"\n"));
        }
        text.push_str(&format!("data_dir = {}\n", toml_path(&self.data_dir)));
        let dirs: Vec<String> = self.plugin_dirs.iter().map(|d| toml_path(d)).collect();
        text.push_str(&format!("plugin_dirs = [{}]\n", dirs.join(", ")));
        text.push_str(&self.daemon);
        for part in [&self.units, &self.indicators] {
            if !part.is_empty() {
                text.push('\n');
                text.push_str(part);
            }
        }
        text.push_str(&self.rest);
        text
    }

    /// Writes `<dir>/tally.toml` and returns its path.
    pub fn write(&self) -> PathBuf {
        self.write_as("tally.toml")
    }

    /// Writes the configuration as `<dir>/<name>` and returns its path.
    pub fn write_as(&self, name: &str) -> PathBuf {
        write_config(&self.dir, name, &self.text())
    }

    /// Writes `<dir>/tally.toml` and starts a daemon on it.
    pub fn start(&self) -> TestDaemon {
        self.start_with_env(&[])
    }

    /// Writes `<dir>/tally.toml` and starts a daemon on it with extra
    /// environment variables.
    pub fn start_with_env(&self, envs: &[(&str, &str)]) -> TestDaemon {
        TestDaemon::start_with_env(&self.write(), self.port(), envs)
    }
}

fn push_lines(to: &mut String, lines: &str) {
    let lines = lines.trim();
    if !lines.is_empty() {
        to.push_str(lines);
        to.push('\n');
    }
}

/// `tallyd collect --config <config> --source <source> --from --to`, which
/// must succeed; answers its stderr (the run lines).
pub fn collect(config: &Path, source: &str, from: &str, to: &str) -> String {
    collect_env(config, source, from, to, &[])
}

/// [`collect`] with extra environment variables.
pub fn collect_env(
    config: &Path,
    source: &str,
    from: &str,
    to: &str,
    envs: &[(&str, &str)],
) -> String {
    let config = config.to_str().unwrap();
    let out = run_tallyd_env(
        &[
            "collect", "--config", config, "--source", source, "--from", from, "--to", to,
        ],
        envs,
    );
    assert_eq!(exit_code(&out), 0, "collect {source}: {}", stderr(&out));
    stderr(&out)
}

/// `tallyd report --config <config> --period <period> --format json`, which
/// must succeed; answers the report.
pub fn report_json(config: &Path, period: &str) -> serde_json::Value {
    let config = config.to_str().unwrap();
    let out = run_tallyd(&[
        "report", "--config", config, "--period", period, "--format", "json",
    ]);
    assert_eq!(exit_code(&out), 0, "report {period}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("report {period} is not JSON ({e}): {}", stdout(&out)))
}

// ---------------------------------------------------------------------------
// Reading a summary: `/api/v1/summary` and `tallyd report --format json`
// answer the same shape, `units[].values.<indicator>`.

/// One unit's row of a summary, by id; fails naming the unit and showing the
/// summary when the unit is not in it.
#[track_caller]
pub fn unit_row<'a>(summary: &'a serde_json::Value, unit: &str) -> &'a serde_json::Value {
    summary["units"]
        .as_array()
        .unwrap_or_else(|| panic!("no units array in summary: {summary:#}"))
        .iter()
        .find(|u| u["id"] == unit)
        .unwrap_or_else(|| panic!("unit {unit} not in summary: {summary:#}"))
}

/// One unit's cell of an indicator (`value`, `previous`, `target`, the
/// flags...); `null` when the unit has nothing for it.
#[track_caller]
pub fn cell<'a>(
    summary: &'a serde_json::Value,
    unit: &str,
    indicator: &str,
) -> &'a serde_json::Value {
    &unit_row(summary, unit)["values"][indicator]
}

/// One unit's value of an indicator; `null` when it has none.
#[track_caller]
pub fn value(summary: &serde_json::Value, unit: &str, indicator: &str) -> serde_json::Value {
    cell(summary, unit, indicator)["value"].clone()
}

/// A platform API on 127.0.0.1 answering `GET {path}?day=YYYY-MM-DD` with the
/// JSON `body(DD)` and anything else with 404; it serves until the test ends.
/// Returns the endpoint's URL (`http://127.0.0.1:PORT{path}`).
pub fn daily_api(path: &'static str, body: fn(u32) -> String) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let prefix = format!("GET {path}?day=");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let day = request_line
                .strip_prefix(&prefix)
                .and_then(|rest| rest.get(8..10))
                .and_then(|dd| dd.parse::<u32>().ok());
            let (status, body) = match day {
                Some(dd) => ("200 OK", body(dd)),
                None => ("404 Not Found", "{}".to_owned()),
            };
            let _ = write!(
                &stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}
