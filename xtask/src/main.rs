//! Project automation, run as `cargo xtask <command>` (an alias in
//! `.cargo/config.toml`). Written in Rust with std only, so it runs wherever
//! cargo does and needs nothing installed beside the toolchain.
//!
//! ```text
//! cargo xtask test [-- ARGS]   build everything tests need, then cargo test --workspace ARGS
//! cargo xtask demo [-- ARGS]   build the workspace, then tally-demo ARGS
//! cargo xtask bench [ARGS]     release build, then every benchmark of issue 7: one report
//! cargo xtask lint             rustfmt --check and clippy -D warnings
//! cargo xtask ci               lint, then test: what .ci/run calls
//! cargo xtask dist [--debug]   the .deb and the tarball of the installed layout (dist.rs)
//! ```

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench;
mod dist;
mod layers;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [-- ARGS]   cargo build --workspace (tallyd and the plugin libraries),
                   build the test fixture plugins, then cargo test --workspace ARGS
                   (ARGS naming packages with -p replace --workspace)
  demo [-- ARGS]   cargo build --workspace, then run tally-demo ARGS
  bench [ARGS]     release build, then tally-bench (store, summaries, exposition),
                   start time, and the collection runs beside collectd and a
                   Python exporter; one Markdown report (cargo xtask bench --help)
  lint             cargo fmt --check and cargo clippy -D warnings
  ci               lint, then test
  dist [--debug]   target/dist/tally_<version>_<arch>.deb and tally-<version>-<arch>.tar.gz
                   (release build; --debug packages the debug build);
                   dist --check-installed checks the installed package";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let extra = strip_separator(rest);
    let ws = Workspace::locate();
    let result = match command.to_str() {
        Some("test") => ws.test(extra),
        Some("demo") => ws.demo(extra),
        Some("bench") => bench::bench(&ws, rest),
        Some("dist") => dist::dist(&ws, extra),
        Some("lint") if extra.is_empty() => ws.lint(),
        Some("ci") if extra.is_empty() => ws.lint().and_then(|()| ws.test(&[])),
        Some("lint" | "ci") => {
            eprintln!(
                "xtask: {} takes no arguments\n\n{USAGE}",
                command.to_string_lossy()
            );
            return ExitCode::from(2);
        }
        Some("help" | "-h" | "--help") => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!(
                "xtask: unknown command {:?}\n\n{USAGE}",
                command.to_string_lossy()
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xtask: {failure}");
            ExitCode::from(failure.code)
        }
    }
}

/// `cargo xtask test -- --nocapture` and `cargo xtask test --nocapture` both
/// pass `--nocapture` on; a second `--` (for the test binaries) is kept.
fn strip_separator(rest: &[OsString]) -> &[OsString] {
    match rest.split_first() {
        Some((first, tail)) if first == "--" => tail,
        _ => rest,
    }
}

/// Whether cargo arguments (before a `--` meant for the test binaries) pick packages.
fn names_packages(args: &[OsString]) -> bool {
    args.iter()
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| a == "--package" || a.starts_with("--package=") || a.starts_with("-p"))
}

/// A step that did not succeed: its one-line message and the exit code to leave with.
struct Failure {
    message: String,
    code: u8,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

type Result<T = ()> = std::result::Result<T, Failure>;

struct Workspace {
    root: PathBuf,
    /// Where the workspace builds: `$CARGO_TARGET_DIR`, else `<root>/target`.
    target: PathBuf,
    cargo: OsString,
}

impl Workspace {
    fn locate() -> Workspace {
        // Ask cargo at run time: a path baked in at compile time would point at
        // another checkout whenever an xtask binary is shared between checkouts
        // through a common target directory.
        let cargo = env_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let root = Command::new(&cargo)
            .args(["locate-project", "--workspace", "--message-format", "plain"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                let manifest = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
                manifest.parent().map(Path::to_path_buf)
            })
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("xtask lives in a directory of the workspace root")
                    .to_path_buf()
            });
        // A relative CARGO_TARGET_DIR is relative to where cargo was invoked,
        // which is our current directory; the steps run from the root, so make
        // it absolute before handing it on.
        let target = match env_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    std::env::current_dir()
                        .map(|cwd| cwd.join(&dir))
                        .unwrap_or(dir)
                }
            }
            None => root.join("target"),
        };
        // `cargo run` sets CARGO to the cargo that runs us, so the steps use
        // the same toolchain even when several are installed.
        Workspace {
            root,
            target,
            cargo,
        }
    }

    fn fixtures_manifest(&self) -> Option<PathBuf> {
        let manifest = self.root.join("tests/fixtures/Cargo.toml");
        manifest.is_file().then_some(manifest)
    }

    /// The fixture plugins build into their own target directory, so that they
    /// never sit beside the real plugins in `target/debug`.
    fn fixtures_target(&self) -> PathBuf {
        self.target.join("fixtures")
    }

    /// A cargo command run from the workspace root into our target directory.
    fn cargo<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.cargo);
        cmd.args(args)
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target);
        cmd
    }

    fn build_workspace(&self) -> Result {
        run("build", self.cargo(["build", "--workspace"]))
    }

    fn test(&self, extra: &[OsString]) -> Result {
        // `cargo test` builds test harnesses, not the tallyd binary and the
        // plugin cdylibs that the integration tests run and load: build them first.
        self.build_workspace()?;
        let fixtures_target = self.fixtures_target();
        match self.fixtures_manifest() {
            Some(manifest) => {
                let mut cmd = self.cargo(["build", "--manifest-path"]);
                cmd.arg(&manifest).arg("--target-dir").arg(&fixtures_target);
                run("build fixtures", cmd)?;
            }
            None => eprintln!(
                "xtask: skipping the fixture plugins: tests/fixtures/Cargo.toml does not exist yet"
            ),
        }
        let mut cmd = self.cargo(["test"]);
        // `--workspace` beside `-p` would test everything anyway.
        if !names_packages(extra) {
            cmd.arg("--workspace");
        }
        cmd.args(extra)
            .env("TALLY_FIXTURES_DIR", fixtures_target.join("debug"));
        run_tests(cmd)
    }

    fn demo(&self, extra: &[OsString]) -> Result {
        self.build_workspace()?;
        let demo = self
            .target
            .join("debug")
            .join(format!("tally-demo{}", std::env::consts::EXE_SUFFIX));
        let mut cmd = Command::new(&demo);
        cmd.args(extra).current_dir(&self.root);
        eprintln!("xtask: {}", shown(&cmd));
        exec(cmd, &demo)
    }

    fn lint(&self) -> Result {
        const CLIPPY: [&str; 4] = ["--all-targets", "--", "-D", "warnings"];
        // First: it reads only manifests, and a broken layer is worth knowing
        // before a long clippy run.
        eprintln!("xtask: checking the crate layers (xtask/src/layers.rs)");
        layers::check(&self.root).map_err(|message| Failure {
            message: format!("step `layers` failed: {message}"),
            code: 1,
        })?;
        run("fmt", self.cargo(["fmt", "--all", "--", "--check"]))?;
        let mut cmd = self.cargo(["clippy", "--workspace"]);
        cmd.args(CLIPPY);
        run("clippy", cmd)?;
        // The fixtures are a workspace of their own (excluded from ours), so
        // neither command above looks at them.
        if let Some(manifest) = self.fixtures_manifest() {
            let mut cmd = self.cargo(["fmt", "--manifest-path"]);
            cmd.arg(&manifest).args(["--all", "--", "--check"]);
            run("fmt fixtures", cmd)?;
            let mut cmd = self.cargo(["clippy", "--manifest-path"]);
            cmd.arg(&manifest)
                .arg("--target-dir")
                .arg(self.fixtures_target())
                .args(CLIPPY);
            run("clippy fixtures", cmd)?;
        }
        Ok(())
    }
}

/// Runs one step with inherited stdio, so its output streams as it comes.
fn run(step: &str, mut cmd: Command) -> Result {
    eprintln!("xtask: {}", shown(&cmd));
    let status = cmd.status().map_err(|e| Failure {
        message: format!(
            "step `{step}` could not start {}: {e}",
            Path::new(cmd.get_program()).display()
        ),
        code: 1,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(Failure {
        message: format!("step `{step}` failed ({status})"),
        code: exit_code(status.code()),
    })
}

/// Runs `cargo test`, passing its output through, and ends with one line
/// totalling every test binary's `test result:` line, so that a reader (or CI)
/// sees at the bottom how many tests ran, not the last doc-test binary's zero.
fn run_tests(mut cmd: Command) -> Result {
    use std::io::{BufRead, BufReader, Write};
    eprintln!("xtask: {}", shown(&cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Failure {
            message: format!("step `test` could not start cargo: {e}"),
            code: 1,
        })?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout().lock();
        for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
            let _ = writeln!(stdout, "{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                passed += count(rest, " passed");
                failed += count(rest, " failed");
                ignored += count(rest, " ignored");
            }
        }
    }
    let status = child.wait().map_err(|e| Failure {
        message: format!("step `test`: {e}"),
        code: 1,
    })?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if status.success() {
        return Ok(());
    }
    Err(Failure {
        message: format!("step `test` failed ({status})"),
        code: exit_code(status.code()),
    })
}

/// The number before `what` in `ok. 12 passed; 0 failed; ...`.
fn count(summary: &str, what: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(what.trim_start())
                .map(str::trim)
        })
        .and_then(|n| n.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The child's exit code if it is one we can pass on, else 1.
fn exit_code(code: Option<i32>) -> u8 {
    code.and_then(|c| u8::try_from(c).ok())
        .filter(|&c| c != 0)
        .unwrap_or(1)
}

/// Becomes the program on unix, so that signals and the exit code are tallyd's own.
#[cfg(unix)]
fn exec(mut cmd: Command, program: &Path) -> Result {
    use std::os::unix::process::CommandExt;
    // `exec` only returns if it failed.
    let e = cmd.exec();
    Err(Failure {
        message: format!("step `demo` could not start {}: {e}", program.display()),
        code: 1,
    })
}

#[cfg(not(unix))]
fn exec(mut cmd: Command, program: &Path) -> Result {
    let status = cmd.status().map_err(|e| Failure {
        message: format!("step `demo` could not start {}: {e}", program.display()),
        code: 1,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(Failure {
        message: format!("step `demo` failed ({status})"),
        code: exit_code(status.code()),
    })
}

/// The command line as a person would type it, for the step's log line.
fn shown(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        // CARGO_TARGET_DIR is set on every step; showing it each time is noise.
        if key == "CARGO_TARGET_DIR" {
            continue;
        }
        if let Some(value) = value {
            line.push_str(&format!(
                "{}={} ",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    let program = Path::new(cmd.get_program());
    let name = if program.file_stem() == Some(OsStr::new("cargo")) {
        "cargo".into()
    } else {
        program.display().to_string()
    };
    line.push_str(&name);
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// The daemon reads its environment only through config (see `clippy.toml`);
/// xtask is build tooling, where reading cargo's variables is the point.
#[allow(clippy::disallowed_methods)]
fn env_os(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_the_parts_of_a_test_result_line() {
        let ok =
            "ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(
            (
                count(ok, " passed"),
                count(ok, " failed"),
                count(ok, " ignored")
            ),
            (12, 0, 3)
        );
        let bad = "FAILED. 24 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!((count(bad, " passed"), count(bad, " failed")), (24, 1));
    }
}
