//! `cargo xtask dist`: the `.deb` and the tarball of the installed layout.
//!
//! ```text
//! /usr/bin/tallyd
//! /usr/lib/tally/plugins/lib*.so        every plugin library of the workspace
//! /etc/tally/tally.toml                 the starting configuration (a conffile)
//! /lib/systemd/system/tally.service
//! /usr/share/doc/tally/                 copyright, changelog.gz, operating.md, configuration.md,
//!                                       reports.md, narrative.md.j2 (the 情况报告 template to copy)
//! ```
//!
//! The tarball holds the same tree without `usr/` (`bin/`, `lib/tally/plugins/`,
//! `etc/tally/`, `lib/systemd/system/`, `share/doc/tally/`) under one
//! directory, `tally-<version>-<arch>/`: `tallyd` looks for plugins in
//! `lib/tally/plugins` beside its own directory wherever the tree is put.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Failure, Result, Workspace, run};

pub const USAGE: &str = "\
usage: cargo xtask dist [--debug]
       cargo xtask dist --check-installed

  (no option)         release build of tallyd and every plugin library, then
                      target/dist/tally_<version>_<arch>.deb and
                      target/dist/tally-<version>-<arch>.tar.gz
  --debug             package the debug build instead (what `cargo xtask test` built)
  --check-installed   after `dpkg -i`: /usr/bin/tallyd plugins lists every plugin
                      library of the workspace from /usr/lib/tally/plugins and
                      /usr/bin/tallyd check accepts /etc/tally/tally.toml";

/// The project publishes no address of its own; Debian requires the field.
const MAINTAINER: &str = "tally maintainers <tally@localhost>";

pub fn dist(ws: &Workspace, args: &[OsString]) -> Result {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    match args.as_slice() {
        [] => package(ws, Profile::Release),
        ["--debug"] => package(ws, Profile::Debug),
        ["--check-installed"] => check_installed(ws),
        ["-h" | "--help"] => {
            eprintln!("{USAGE}");
            Ok(())
        }
        _ => Err(Failure {
            message: format!("dist: unknown arguments {args:?}\n\n{USAGE}"),
            code: 2,
        }),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// What goes into a package: the built files and the version they say.
struct Inputs {
    version: String,
    tallyd: PathBuf,
    plugins: Vec<PathBuf>,
}

fn package(ws: &Workspace, profile: Profile) -> Result {
    let libs = plugin_libraries(ws)?;
    // The very build `cargo xtask test` makes (another selection of targets
    // would unify features differently and rebuild half the dependencies).
    let mut build = ws.cargo(["build", "--workspace"]);
    if profile == Profile::Release {
        build.arg("--release");
    }
    run("build", build)?;
    let out = ws.target.join(profile.dir());
    let tallyd = out.join("tallyd");
    let plugins: Vec<PathBuf> = libs.iter().map(|name| out.join(lib_file(name))).collect();
    for file in std::iter::once(&tallyd).chain(&plugins) {
        if !file.is_file() {
            return Err(fail(format!("{} was not built", file.display())));
        }
    }
    let version = tallyd_version(&tallyd)?;
    let inputs = Inputs {
        version,
        tallyd,
        plugins,
    };
    let dist = ws.target.join("dist");
    std::fs::create_dir_all(&dist).map_err(|e| io_fail(&dist, e))?;
    remove_old_packages(&dist)?;

    let deb_arch = deb_arch(std::env::consts::ARCH)?;
    let stage = dist.join("stage");
    let deb_root = stage.join("deb");
    fresh_dir(&deb_root)?;
    lay_out(&ws.root, &inputs, &deb_root, &Layout::DEB)?;
    write_debian(&ws.root, &inputs, &deb_root, deb_arch)?;
    let deb = dist.join(format!("tally_{}_{deb_arch}.deb", inputs.version));
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("--root-owner-group");
    if profile == Profile::Debug {
        // Debug binaries are large and the package only lives for CI's
        // install check: fast compression, not xz.
        cmd.args(["-Zgzip", "-z1"]);
    }
    cmd.arg("--build").arg(&deb_root).arg(&deb);
    run("dpkg-deb", cmd)?;

    let name = format!("tally-{}-{}", inputs.version, std::env::consts::ARCH);
    let tar_stage = stage.join("tar");
    fresh_dir(&tar_stage)?;
    lay_out(&ws.root, &inputs, &tar_stage.join(&name), &Layout::TARBALL)?;
    let tarball = dist.join(format!("{name}.tar.gz"));
    let mut cmd = Command::new("tar");
    cmd.args([
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--sort=name",
        "-czf",
    ])
    .arg(&tarball)
    .arg("-C")
    .arg(&tar_stage)
    .arg(&name);
    run("tar", cmd)?;
    std::fs::remove_dir_all(&stage).map_err(|e| io_fail(&stage, e))?;
    println!("{}\n{}", deb.display(), tarball.display());
    Ok(())
}

/// Where each part goes, relative to the root of a package's tree.
struct Layout {
    bin: &'static str,
    plugins: &'static str,
    etc: &'static str,
    unit: &'static str,
    doc: &'static str,
}

impl Layout {
    const DEB: Layout = Layout {
        bin: "usr/bin",
        plugins: "usr/lib/tally/plugins",
        etc: "etc/tally",
        unit: "lib/systemd/system",
        doc: "usr/share/doc/tally",
    };
    /// The same tree, rooted where the tarball is unpacked.
    const TARBALL: Layout = Layout {
        bin: "bin",
        plugins: "lib/tally/plugins",
        etc: "etc/tally",
        unit: "lib/systemd/system",
        doc: "share/doc/tally",
    };
}

/// Copies the files of the installed layout under `root`, with the modes the
/// loader wants (plugins and their directory writable by their owner only).
fn lay_out(repo: &Path, inputs: &Inputs, root: &Path, layout: &Layout) -> Result {
    let dir = |rel: &str| -> Result<PathBuf> {
        let d = root.join(rel);
        std::fs::create_dir_all(&d).map_err(|e| io_fail(&d, e))?;
        Ok(d)
    };
    copy(&inputs.tallyd, &dir(layout.bin)?.join("tallyd"), 0o755)?;
    let plugins = dir(layout.plugins)?;
    for lib in &inputs.plugins {
        let name = lib.file_name().expect("a library file name");
        copy(lib, &plugins.join(name), 0o644)?;
    }
    copy(
        &repo.join("config/tally.toml"),
        &dir(layout.etc)?.join("tally.toml"),
        0o644,
    )?;
    copy(
        &repo.join("config/tally.service"),
        &dir(layout.unit)?.join("tally.service"),
        0o644,
    )?;
    let doc = dir(layout.doc)?;
    copy(
        &repo.join("config/debian/copyright"),
        &doc.join("copyright"),
        0o644,
    )?;
    for page in ["operating.md", "configuration.md", "reports.md"] {
        copy(&repo.join("docs").join(page), &doc.join(page), 0o644)?;
    }
    copy(
        &repo.join("config/narrative.md.j2"),
        &doc.join("narrative.md.j2"),
        0o644,
    )?;
    let changelog = doc.join("changelog.gz");
    write_file(
        &changelog,
        &gzip(changelog_text(&inputs.version).as_bytes())?,
        0o644,
    )?;
    set_dir_modes(root)
}

/// `DEBIAN/`: control, conffiles and the maintainer scripts.
fn write_debian(repo: &Path, inputs: &Inputs, root: &Path, arch: &str) -> Result {
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian).map_err(|e| io_fail(&debian, e))?;
    let mut binaries = vec![inputs.tallyd.clone()];
    binaries.extend(inputs.plugins.iter().cloned());
    let depends = depends(&binaries)?;
    let control = format!(
        "Package: tally\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {size}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: activity counts of an organisation's units\n \
         tallyd collects the activity counts government units report every\n \
         quarter through plugins, rolls them up the organisation tree per period\n \
         and serves them as Prometheus metrics, a summary API and reports.\n",
        version = inputs.version,
        size = tree_bytes(root).div_ceil(1024),
    );
    write_file(&debian.join("control"), control.as_bytes(), 0o644)?;
    write_file(&debian.join("conffiles"), b"/etc/tally/tally.toml\n", 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        copy(
            &repo.join("config/debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    set_dir_modes(root)
}

/// The packages the binaries need, from the libraries `ldd` finds and the
/// package `dpkg -S` says owns each; libc6 at least at the newest
/// `GLIBC_2.x` symbol version any binary asks for. `adduser` for postinst.
fn depends(binaries: &[PathBuf]) -> Result<String> {
    let mut packages: Vec<String> = vec!["adduser".into()];
    for binary in binaries {
        let out = Command::new("ldd")
            .arg(binary)
            .output()
            .map_err(|e| fail(format!("cannot run ldd: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "ldd {} failed: {}",
                binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        for lib in ldd_paths(&String::from_utf8_lossy(&out.stdout)) {
            let package = owning_package(&lib)?;
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
    }
    let mut glibc = (0, 0);
    for binary in binaries {
        let bytes = std::fs::read(binary).map_err(|e| io_fail(binary, e))?;
        glibc = glibc.max(newest_glibc(&bytes));
    }
    packages.sort();
    Ok(packages
        .into_iter()
        .map(|p| {
            if p == "libc6" && glibc > (0, 0) {
                format!("libc6 (>= {}.{})", glibc.0, glibc.1)
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// The resolved library paths of `ldd` output (not the vDSO, which no file holds).
fn ldd_paths(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn owning_package(lib: &Path) -> Result<String> {
    // dpkg knows a file by the path it installed, which on a merged-/usr
    // system may be the other spelling of the one ldd printed.
    let mut candidates = vec![lib.to_path_buf()];
    if let Ok(real) = lib.canonicalize() {
        candidates.push(real.clone());
        if let Ok(rest) = real.strip_prefix("/usr") {
            candidates.push(Path::new("/").join(rest));
        }
    }
    for candidate in &candidates {
        let out = Command::new("dpkg")
            .arg("-S")
            .arg(candidate)
            .output()
            .map_err(|e| fail(format!("cannot run dpkg -S: {e}")))?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(package) = text.lines().next().and_then(|l| l.split(':').next()) {
                return Ok(package.trim().to_owned());
            }
        }
    }
    Err(fail(format!(
        "no installed package owns {}: cannot say what the .deb depends on",
        lib.display()
    )))
}

/// The newest `GLIBC_<major>.<minor>` version named in an ELF file's bytes
/// (its version needs), `(0, 0)` if none.
fn newest_glibc(bytes: &[u8]) -> (u32, u32) {
    const TAG: &[u8] = b"GLIBC_";
    let mut newest = (0, 0);
    let mut at = 0;
    while let Some(pos) = find(&bytes[at..], TAG) {
        let start = at + pos + TAG.len();
        let end = bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'.'))
            .map_or(bytes.len(), |n| start + n);
        let text = String::from_utf8_lossy(&bytes[start..end]);
        let mut parts = text.split('.').map(|p| p.parse::<u32>());
        if let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) {
            newest = newest.max((major, minor));
        }
        at = end.max(start);
    }
    newest
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn check_installed(ws: &Workspace) -> Result {
    let expected = plugin_libraries(ws)?;
    let tallyd = Path::new("/usr/bin/tallyd");
    let plugins = Path::new("/usr/lib/tally/plugins");
    let out = installed(tallyd, &["plugins"])?;
    let mut missing = Vec::new();
    for name in &expected {
        let path = plugins.join(lib_file(name));
        if !out
            .lines()
            .any(|l| l.ends_with(&format!(" {}", path.display())))
        {
            missing.push(path.display().to_string());
        }
    }
    if out.contains("refused:") || !missing.is_empty() {
        return Err(fail(format!(
            "`{} plugins` does not list {} (or refused one):\n{out}",
            tallyd.display(),
            missing.join(", ")
        )));
    }
    eprintln!(
        "xtask: {} plugins lists all {}",
        tallyd.display(),
        expected.len()
    );
    installed(tallyd, &["check"])?;
    eprintln!(
        "xtask: {} check accepts /etc/tally/tally.toml",
        tallyd.display()
    );
    Ok(())
}

/// Runs an installed tallyd without --config or TALLY_CONFIG, as an operator
/// would; its output is shown and returned.
fn installed(tallyd: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(tallyd);
    cmd.args(args).env_remove("TALLY_CONFIG").current_dir("/");
    eprintln!("xtask: {}", crate::shown(&cmd));
    let out = cmd
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", tallyd.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(fail(format!(
            "`{} {}` failed ({})",
            tallyd.display(),
            args.join(" "),
            out.status
        )));
    }
    Ok(stdout)
}

/// The library name of every `cdylib` target of the workspace, from
/// `cargo metadata`: the plugins (test fixtures are a workspace of their own).
fn plugin_libraries(ws: &Workspace) -> Result<Vec<String>> {
    let out = ws
        .cargo(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|e| fail(format!("cannot run cargo metadata: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let libs = cdylib_names(&String::from_utf8_lossy(&out.stdout));
    if libs.is_empty() {
        return Err(fail("cargo metadata lists no cdylib target".into()));
    }
    Ok(libs)
}

/// In cargo metadata's JSON each target is `{"kind":[...],"crate_types":[...],"name":"..."`,
/// in that order; no plugin name needs escaping.
fn cdylib_names(metadata: &str) -> Vec<String> {
    const TYPES: &str = "\"crate_types\":[";
    const NAME: &str = "\"name\":\"";
    let mut names = Vec::new();
    let mut rest = metadata;
    while let Some(pos) = rest.find(TYPES) {
        rest = &rest[pos + TYPES.len()..];
        let Some(end) = rest.find(']') else { break };
        let is_cdylib = rest[..end].contains("\"cdylib\"");
        rest = &rest[end..];
        if let (true, Some(at)) = (is_cdylib, rest.find(NAME)) {
            let name = &rest[at + NAME.len()..];
            if let Some(close) = name.find('"') {
                names.push(name[..close].to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn lib_file(name: &str) -> String {
    format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// `tallyd 0.1.0` → `0.1.0`.
fn tallyd_version(tallyd: &Path) -> Result<String> {
    let out = Command::new(tallyd)
        .arg("--version")
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", tallyd.display())))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| fail(format!("{} --version printed no version", tallyd.display())))
}

/// Debian's name of the architecture this xtask (and so the build) runs on.
fn deb_arch(rust_arch: &str) -> Result<&'static str> {
    Ok(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        other => return Err(fail(format!("no Debian architecture known for {other}"))),
    })
}

fn changelog_text(version: &str) -> String {
    format!(
        "tally ({version}) unstable; urgency=medium\n\n  \
         * Built from the tally workspace by `cargo xtask dist`.\n\n \
         -- {MAINTAINER}  Thu, 01 Jan 1970 00:00:00 +0000\n"
    )
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::process::Stdio;
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run gzip: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(bytes)
        .map_err(|e| fail(format!("gzip: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("gzip: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!("gzip failed ({})", out.status)));
    }
    Ok(out.stdout)
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result {
    std::fs::copy(from, to).map_err(|e| fail(format!("copying {}: {e}", from.display())))?;
    set_mode(to, mode)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result {
    std::fs::write(path, bytes).map_err(|e| io_fail(path, e))?;
    set_mode(path, mode)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_fail(path, e))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> Result {
    Ok(())
}

/// 0755 on every directory of the tree, whatever the umask made them.
fn set_dir_modes(root: &Path) -> Result {
    set_mode(root, 0o755)?;
    for entry in std::fs::read_dir(root).map_err(|e| io_fail(root, e))? {
        let path = entry.map_err(|e| io_fail(root, e))?.path();
        if path.is_dir() {
            set_dir_modes(&path)?;
        }
    }
    Ok(())
}

fn tree_bytes(root: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                tree_bytes(&path)
            } else {
                entry.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn fresh_dir(dir: &Path) -> Result {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io_fail(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io_fail(dir, e))
}

/// Earlier packages go, so that `target/dist/tally_*.deb` names one file.
fn remove_old_packages(dist: &Path) -> Result {
    for entry in std::fs::read_dir(dist).map_err(|e| io_fail(dist, e))? {
        let path = entry.map_err(|e| io_fail(dist, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| {
            (n.starts_with("tally_") && n.ends_with(".deb"))
                || (n.starts_with("tally-") && n.ends_with(".tar.gz"))
        }) {
            std::fs::remove_file(&path).map_err(|e| io_fail(&path, e))?;
        }
    }
    Ok(())
}

fn fail(message: String) -> Failure {
    Failure { message, code: 1 }
}

fn io_fail(path: &Path, e: std::io::Error) -> Failure {
    fail(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdylib_targets_are_found_in_cargo_metadata() {
        let json = r#"{"packages":[{"name":"tally","targets":[{"kind":["lib"],"crate_types":["lib"],"name":"tally","src_path":"x"},{"kind":["bin"],"crate_types":["bin"],"name":"tallyd"}]},{"name":"tally-plugin-wechat","targets":[{"kind":["cdylib","rlib"],"crate_types":["cdylib","rlib"],"name":"tally_wechat","src_path":"y"}]},{"name":"tally-plugin-exec","targets":[{"kind":["cdylib","rlib"],"crate_types":["cdylib","rlib"],"name":"tally_exec"}]}]}"#;
        assert_eq!(cdylib_names(json), ["tally_exec", "tally_wechat"]);
    }

    #[test]
    fn ldd_lines_give_the_library_paths() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(ldd),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn the_newest_glibc_version_needed_is_found() {
        let bytes = b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_PRIVATE\0GLIBC_2.17\0";
        assert_eq!(newest_glibc(bytes), (2, 34));
        assert_eq!(newest_glibc(b"no versions"), (0, 0));
    }

    /// The tarball's tree (and the .deb's, under usr/) holds tallyd, every
    /// plugin given, the configuration, the unit and the docs, with the modes
    /// the plugin loader accepts.
    #[test]
    fn the_layout_is_complete_with_loader_safe_modes() {
        use std::os::unix::fs::PermissionsExt;
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let scratch = std::env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
        fresh_dir(&scratch).unwrap_or_else(|f| panic!("{f}"));
        let built = scratch.join("built");
        std::fs::create_dir_all(&built).unwrap();
        let fake = |name: &str| {
            let path = built.join(name);
            std::fs::write(&path, name).unwrap();
            path
        };
        let inputs = Inputs {
            version: "1.2.3".into(),
            tallyd: fake("tallyd"),
            plugins: vec![fake(&lib_file("tally_a")), fake(&lib_file("tally_b"))],
        };
        for (layout, root, prefix) in [
            (&Layout::TARBALL, scratch.join("tar"), ""),
            (&Layout::DEB, scratch.join("deb"), "usr/"),
        ] {
            lay_out(repo, &inputs, &root, layout).unwrap_or_else(|f| panic!("{f}"));
            let mode = |rel: &str| {
                let meta = std::fs::metadata(root.join(rel))
                    .unwrap_or_else(|e| panic!("{rel} is missing: {e}"));
                meta.permissions().mode() & 0o7777
            };
            assert_eq!(mode(&format!("{prefix}bin/tallyd")), 0o755);
            for lib in ["tally_a", "tally_b"] {
                let rel = format!("{prefix}lib/tally/plugins/{}", lib_file(lib));
                assert_eq!(mode(&rel), 0o644, "{rel}");
            }
            assert_eq!(mode(&format!("{prefix}lib/tally/plugins")), 0o755);
            assert_eq!(mode("etc/tally/tally.toml"), 0o644);
            assert_eq!(mode("lib/systemd/system/tally.service"), 0o644);
            for doc in [
                "copyright",
                "changelog.gz",
                "operating.md",
                "configuration.md",
                "reports.md",
                "narrative.md.j2",
            ] {
                assert_eq!(mode(&format!("{prefix}share/doc/tally/{doc}")), 0o644);
            }
        }
        // The unit runs what the .deb installs, where it installs it.
        let unit = std::fs::read_to_string(repo.join("config/tally.service")).unwrap();
        for line in [
            "ExecStart=/usr/bin/tallyd run --config /etc/tally/tally.toml",
            "User=tally",
            "StateDirectory=tally",
            "LimitNOFILE=65536",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "tally.service lacks {line}"
            );
        }
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
