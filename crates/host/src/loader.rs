//! Finding and loading plugin libraries.
//!
//! Together with `instance.rs` this is the only code of the daemon with
//! `unsafe`: it opens shared libraries and calls through their vtables.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tally_plugin::Description;
use tally_plugin::abi::{self, Descriptor, EntryFn, OwnedBytes, PluginVTable, Status};

/// Why a library was not loaded. Each message is one line that names the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    #[error("{path}: not a tally plugin: it exports no `tally_plugin_entry_v1`")]
    NotAPlugin { path: PathBuf },
    #[error(
        "{path}: ABI version mismatch: the library speaks plugin ABI v{found}, this tallyd speaks ABI v{expected}; rebuild it against tally-plugin {sdk}"
    )]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
        sdk: &'static str,
    },
    #[error("{path}: duplicate plugin name \"{name}\": already loaded from {first}")]
    Duplicate {
        path: PathBuf,
        name: String,
        first: PathBuf,
    },
    #[error("{path}: cannot load library: {message}")]
    Load { path: PathBuf, message: String },
    #[error(
        "{path}: refused: {what} is writable by group or others (mode {mode:o}); a loaded plugin runs with the daemon's rights, make it writable by its owner only"
    )]
    Insecure {
        path: PathBuf,
        what: String,
        mode: u32,
    },
    #[error(
        "{path}: refused: {what} belongs to {owner}, neither root nor the user tallyd runs as ({me}); that user could rewrite it and run code as tallyd: chown it to root or to {me}"
    )]
    ForeignOwner {
        path: PathBuf,
        what: String,
        owner: String,
        me: String,
    },
    #[error("{path}: bad plugin descriptor: {why}")]
    BadDescriptor { path: PathBuf, why: String },
}

impl PluginLoadError {
    pub fn path(&self) -> &Path {
        match self {
            PluginLoadError::NotAPlugin { path }
            | PluginLoadError::AbiMismatch { path, .. }
            | PluginLoadError::Duplicate { path, .. }
            | PluginLoadError::Load { path, .. }
            | PluginLoadError::Insecure { path, .. }
            | PluginLoadError::ForeignOwner { path, .. }
            | PluginLoadError::BadDescriptor { path, .. } => path,
        }
    }
}

/// A loaded plugin library. Never unloaded: code and `'static` data of a
/// library must outlive every pointer the daemon got from it, and Rust
/// libraries with thread-locals cannot be unloaded soundly anyway.
pub struct PluginLibrary {
    pub name: String,
    pub version: String,
    pub sdk_version: String,
    pub abi_major: u32,
    pub abi_minor: u32,
    pub path: PathBuf,
    pub panic_unwind: bool,
    pub description: Description,
    pub(crate) vtable: &'static PluginVTable,
}

impl fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Everything found in the plugin directories: what loaded, and what was refused and why.
#[derive(Default, Debug)]
pub struct PluginRegistry {
    plugins: BTreeMap<String, Arc<PluginLibrary>>,
    refused: Vec<PluginLoadError>,
}

impl PluginRegistry {
    /// Loads every shared library found directly in `dirs`, in order. A refused
    /// library never stops the others from loading.
    pub fn scan(dirs: &[PathBuf]) -> PluginRegistry {
        let mut registry = PluginRegistry::default();
        for dir in dirs {
            let mut files = match candidate_files(dir) {
                Ok(files) => files,
                Err(e) => {
                    registry.refused.push(e);
                    continue;
                }
            };
            files.sort();
            for path in files {
                match load(&path) {
                    Ok(lib) => registry.add(lib),
                    Err(e) => registry.refused.push(e),
                }
            }
        }
        registry
    }

    /// For a reload: a registry holding every library of this one (libraries
    /// are never unloaded, so the registry only grows) plus those newly found
    /// in `dirs`. A file already loaded is reused, not opened again; refusals
    /// are those of this scan only.
    pub fn rescan(&self, dirs: &[PathBuf]) -> PluginRegistry {
        let mut registry = PluginRegistry {
            plugins: self.plugins.clone(),
            refused: Vec::new(),
        };
        for dir in dirs {
            let mut files = match candidate_files(dir) {
                Ok(files) => files,
                Err(e) => {
                    registry.refused.push(e);
                    continue;
                }
            };
            files.sort();
            for path in files {
                let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
                if self.plugins.values().any(|lib| lib.path == canonical) {
                    continue;
                }
                match load(&path) {
                    Ok(lib) => registry.add(lib),
                    Err(e) => registry.refused.push(e),
                }
            }
        }
        registry
    }

    fn add(&mut self, lib: PluginLibrary) {
        if let Some(first) = self.plugins.get(&lib.name) {
            self.refused.push(PluginLoadError::Duplicate {
                path: lib.path.clone(),
                name: lib.name.clone(),
                first: first.path.clone(),
            });
            return;
        }
        self.plugins.insert(lib.name.clone(), Arc::new(lib));
    }

    /// A registry of the given libraries (see [`PluginLibrary::linked`]); a
    /// second library of a name is refused as a duplicate, as in a scan.
    pub fn from_libraries(libraries: Vec<PluginLibrary>) -> PluginRegistry {
        let mut registry = PluginRegistry::default();
        for lib in libraries {
            registry.add(lib);
        }
        registry
    }

    pub fn get(&self, name: &str) -> Option<&Arc<PluginLibrary>> {
        self.plugins.get(name)
    }

    pub fn plugins(&self) -> impl Iterator<Item = &Arc<PluginLibrary>> {
        self.plugins.values()
    }

    pub fn refused(&self) -> &[PluginLoadError] {
        &self.refused
    }
}

fn candidate_files(dir: &Path) -> Result<Vec<PathBuf>, PluginLoadError> {
    let read = std::fs::read_dir(dir).map_err(|e| PluginLoadError::Load {
        path: dir.to_path_buf(),
        message: format!("cannot read plugin directory: {e}"),
    })?;
    check_owner_and_mode(dir, dir, "the plugin directory")?;
    let suffix = std::env::consts::DLL_SUFFIX;
    Ok(read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .collect())
}

#[cfg(unix)]
fn check_owner_and_mode(path: &Path, report_as: &Path, what: &str) -> Result<(), PluginLoadError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).map_err(|e| PluginLoadError::Load {
        path: report_as.to_path_buf(),
        message: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PluginLoadError::Insecure {
            path: report_as.to_path_buf(),
            what: what.to_owned(),
            mode,
        });
    }
    // Its owner may always chmod it writable and rewrite it: only root and
    // the daemon's own user are trusted with code the daemon runs.
    let owner = meta.uid();
    let me = rustix::process::geteuid().as_raw();
    if owner != 0 && owner != me {
        return Err(PluginLoadError::ForeignOwner {
            path: report_as.to_path_buf(),
            what: what.to_owned(),
            owner: user_name(owner),
            me: user_name(me),
        });
    }
    Ok(())
}

/// `uid 1001 (alice)` when `/etc/passwd` names the uid, else `uid 1001`.
#[cfg(unix)]
fn user_name(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        });
    match name {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

#[cfg(not(unix))]
fn check_owner_and_mode(_: &Path, _: &Path, _: &str) -> Result<(), PluginLoadError> {
    Ok(())
}

impl PluginLibrary {
    /// A plugin compiled into this executable rather than loaded from a
    /// shared library: the same descriptor checks and the same ABI calls as
    /// a loaded one, so that tests of the daemon can run a plugin written in
    /// the test, through the real SDK, without building a cdylib. Its `path`
    /// is `<linked>/NAME`, which names no file: a linked plugin cannot run
    /// with `isolation = "process"`.
    ///
    /// ```
    /// use tally_host::{PluginLibrary, PluginRegistry};
    /// use tally_plugin::abi::StaticDescriptor;
    /// use tally_plugin::*;
    ///
    /// struct Nothing;
    /// impl Plugin for Nothing {
    ///     const NAME: &'static str = "nothing";
    ///     type Settings = serde_json::Value;
    ///     fn describe() -> Description { Description::new("does nothing") }
    ///     fn new(_: serde_json::Value, _: &Host) -> Result<Self, Error> { Ok(Nothing) }
    ///     fn collect(&mut self, _: &CollectRequest, _: &Host) -> Result<CollectResponse, Error> {
    ///         Ok(CollectResponse::default())
    ///     }
    /// }
    /// static NOTHING: StaticDescriptor = StaticDescriptor::new::<Nothing>("1.0.0", true);
    ///
    /// let lib = PluginLibrary::linked(&NOTHING).unwrap();
    /// assert_eq!(lib.name, "nothing");
    /// let registry = PluginRegistry::from_libraries(vec![lib]);
    /// assert!(registry.get("nothing").is_some());
    /// ```
    pub fn linked(
        descriptor: &'static abi::StaticDescriptor,
    ) -> Result<PluginLibrary, PluginLoadError> {
        // SAFETY: `as_ptr` points into the `'static` descriptor itself.
        let desc: &'static Descriptor = unsafe { &*descriptor.as_ptr() };
        // SAFETY: the descriptor's name is a `'static` string literal.
        let name = String::from_utf8_lossy(unsafe { desc.plugin_name.as_slice() }).into_owned();
        from_descriptor(desc, Path::new("<linked>").join(name))
    }
}

/// Loads one library and checks that it is a plugin of our ABI.
pub fn load(path: &Path) -> Result<PluginLibrary, PluginLoadError> {
    let path = path.canonicalize().map_err(|e| PluginLoadError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    check_owner_and_mode(&path, &path, "the library file")?;
    if let Some(dir) = path.parent() {
        check_owner_and_mode(dir, &path, "its directory")?;
    }
    let lib = open(&path)?;
    // Leaked on purpose: see `PluginLibrary`.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));

    // SAFETY: the symbol, if present, is the SDK's `export_plugin!` entry point,
    // whose type is `EntryFn`. A library that exports the name with another
    // type is a broken plugin we cannot detect; the descriptor checks below
    // catch the likely cases (wrong magic, wrong version).
    let entry: Option<EntryFn> = unsafe { lib.get::<EntryFn>(abi::ENTRY_SYMBOL) }
        .ok()
        .map(|s| *s);
    let Some(entry) = entry else {
        return Err(other_abi(lib, &path).unwrap_or(PluginLoadError::NotAPlugin { path }));
    };
    // SAFETY: calling the entry point has no preconditions; it returns a
    // pointer to a static descriptor (or null).
    let desc_ptr = unsafe { entry() };
    // SAFETY: a non-null pointer from the entry point refers to a `'static`
    // descriptor in the never-unloaded library. Only the fixed leading fields
    // (magic, versions, size) are read before `size` is checked.
    let desc: &'static Descriptor = match unsafe { desc_ptr.as_ref() } {
        Some(d) => d,
        None => {
            return Err(PluginLoadError::BadDescriptor {
                path,
                why: "the entry point returned null".to_owned(),
            });
        }
    };
    from_descriptor(desc, path)
}

/// Checks a plugin's descriptor and asks the plugin to describe itself;
/// `path` names the plugin in errors.
fn from_descriptor(
    desc: &'static Descriptor,
    path: PathBuf,
) -> Result<PluginLibrary, PluginLoadError> {
    if desc.magic != abi::MAGIC {
        return Err(PluginLoadError::BadDescriptor {
            path,
            why: "wrong magic bytes".to_owned(),
        });
    }
    if desc.abi_major != abi::ABI_VERSION {
        return Err(PluginLoadError::AbiMismatch {
            path,
            found: desc.abi_major,
            expected: abi::ABI_VERSION,
            sdk: abi::SDK_VERSION,
        });
    }
    if desc.size < std::mem::size_of::<Descriptor>()
        || desc.vtable.size < std::mem::size_of::<PluginVTable>()
    {
        return Err(PluginLoadError::BadDescriptor {
            path,
            why: format!(
                "descriptor of {} bytes and vtable of {} bytes are smaller than ABI v1's {} and {}",
                desc.size,
                desc.vtable.size,
                std::mem::size_of::<Descriptor>(),
                std::mem::size_of::<PluginVTable>()
            ),
        });
    }
    // SAFETY: the descriptor's strings point to `'static` data of the library.
    let text = |b: &abi::Bytes| String::from_utf8_lossy(unsafe { b.as_slice() }).into_owned();
    let name = text(&desc.plugin_name);
    if name.is_empty()
        || !name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
    {
        return Err(PluginLoadError::BadDescriptor {
            path,
            why: format!("plugin name {name:?} is not [a-z0-9_]+"),
        });
    }
    if !desc.panic_unwind {
        tracing::warn!(
            path = %path.display(),
            "plugin built with panic = \"abort\": a panic in it ends the whole daemon; build it with the default panic = \"unwind\""
        );
    }
    let vtable: &'static PluginVTable = &desc.vtable;
    let description = describe(vtable).map_err(|why| PluginLoadError::BadDescriptor {
        path: path.clone(),
        why,
    })?;
    Ok(PluginLibrary {
        version: text(&desc.plugin_version),
        sdk_version: text(&desc.sdk_version),
        abi_major: desc.abi_major,
        abi_minor: desc.abi_minor,
        panic_unwind: desc.panic_unwind,
        name,
        path,
        description,
        vtable,
    })
}

#[cfg(unix)]
fn open(path: &Path) -> Result<libloading::Library, PluginLoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: opening a library runs its initialisers with the daemon's
    // rights. We only get here for files in the configured plugin directories
    // that no other user can write (checked above); plugins are trusted code.
    // RTLD_NOW fails at once on missing symbols instead of mid-run, and
    // RTLD_LOCAL keeps one plugin's symbols from resolving another's.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map(Into::into)
        .map_err(|e| PluginLoadError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

#[cfg(not(unix))]
fn open(path: &Path) -> Result<libloading::Library, PluginLoadError> {
    // SAFETY: as for unix: trusted code from the configured plugin directories.
    unsafe { libloading::Library::new(path) }.map_err(|e| PluginLoadError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A library without our entry symbol may still be a tally plugin of another
/// ABI major: say so, rather than "not a plugin".
fn other_abi(lib: &libloading::Library, path: &Path) -> Option<PluginLoadError> {
    (2..=16).chain(std::iter::once(0)).find_map(|major| {
        let mut symbol = abi::entry_symbol_for(major).into_bytes();
        symbol.push(0);
        // SAFETY: only the symbol's presence is checked; it is never called.
        let found = unsafe { lib.get::<*const ()>(&symbol) }.is_ok();
        found.then(|| PluginLoadError::AbiMismatch {
            path: path.to_path_buf(),
            found: major,
            expected: abi::ABI_VERSION,
            sdk: abi::SDK_VERSION,
        })
    })
}

fn describe(vtable: &PluginVTable) -> Result<Description, String> {
    let mut out = OwnedBytes::empty();
    // SAFETY: `describe` takes only the out-slot, which is valid and writable.
    let status = unsafe { (vtable.describe)(&mut out) };
    // SAFETY: the plugin filled `out` during the call (or left it empty).
    let body = unsafe { out.into_vec() };
    match status {
        Status::OK => serde_json::from_slice(&body)
            .map_err(|e| format!("describe answered undecodable JSON: {e}")),
        other => Err(format!(
            "describe failed (status {}): {}",
            other.0,
            String::from_utf8_lossy(&body)
        )),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// An unprivileged uid that is neither root nor the test's own.
    const STRANGER: u32 = 54_321;

    /// Whether this process may give files away (root, as in CI); the tests
    /// below need it and say so when they cannot run.
    fn can_chown() -> bool {
        let probe = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::chown(probe.path(), Some(STRANGER), None).is_ok()
    }

    fn plugin_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("plugins");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let lib = dir.join(format!(
            "{}tally_stranger{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        // Never opened: the owner check comes first.
        std::fs::write(&lib, b"not even a library").unwrap();
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).unwrap();
        (tmp, dir, lib)
    }

    #[test]
    fn a_library_owned_by_another_unprivileged_user_is_refused_naming_owner_and_path() {
        if !can_chown() {
            println!(
                "skipped: giving a file to uid {STRANGER} needs root, and this test runs as another user"
            );
            return;
        }
        let (_tmp, dir, lib) = plugin_dir();
        std::os::unix::fs::chown(&lib, Some(STRANGER), None).unwrap();
        let registry = PluginRegistry::scan(std::slice::from_ref(&dir));
        let refused: Vec<String> = registry.refused().iter().map(|e| e.to_string()).collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        let line = &refused[0];
        assert!(
            matches!(registry.refused()[0], PluginLoadError::ForeignOwner { .. }),
            "{line}"
        );
        let canonical = lib.canonicalize().unwrap();
        assert!(
            line.starts_with(&format!(
                "{}: refused: the library file belongs to uid {STRANGER}",
                canonical.display()
            )),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn a_plugin_directory_owned_by_another_unprivileged_user_loads_nothing() {
        if !can_chown() {
            println!(
                "skipped: giving a directory to uid {STRANGER} needs root, and this test runs as another user"
            );
            return;
        }
        let (_tmp, dir, _lib) = plugin_dir();
        std::os::unix::fs::chown(&dir, Some(STRANGER), None).unwrap();
        let registry = PluginRegistry::scan(std::slice::from_ref(&dir));
        let refused: Vec<String> = registry.refused().iter().map(|e| e.to_string()).collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with(&format!(
                "{}: refused: the plugin directory belongs to uid {STRANGER}",
                dir.display()
            )),
            "{}",
            refused[0]
        );
    }

    #[test]
    fn files_of_the_daemons_own_user_pass_the_owner_check() {
        let (_tmp, dir, lib) = plugin_dir();
        assert!(check_owner_and_mode(&dir, &dir, "the plugin directory").is_ok());
        assert!(check_owner_and_mode(&lib, &lib, "the library file").is_ok());
    }
}
