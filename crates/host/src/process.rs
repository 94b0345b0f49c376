//! Process isolation: the same plugin library, run in a `tallyd plugin-host`
//! child that speaks JSON lines over its stdin and stdout.
//!
//! The child loads the library with the same loader and calls it through the
//! same vtable; host services are performed in the child (it has its own HTTP
//! client and runtime), and its log lines go to its stderr as JSON, which the
//! daemon re-logs under the source's name. A segfault, an abort, an endless
//! loop or a memory blow-up ends only the child: the run fails with result
//! `crash` (or `timeout`), and the next run starts a fresh child.
//!
//! The frames below are private to one `tallyd` binary (parent and child are
//! always the same executable), so unlike `tally_plugin::protocol` they carry
//! no compatibility promise.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tally_plugin::{CollectRequest, CollectResponse, Created, Error};

use super::{CallError, HostServices, SourceInstance, load};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Frame {
    Create {
        source: String,
        settings: tally_config::Settings,
    },
    Collect {
        request: CollectRequest,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Reply {
    Created { created: Created },
    Collected { response: CollectResponse },
    Error { error: Error },
    Panic { message: String },
    Protocol { message: String },
}

impl From<Result<Reply, CallError>> for Reply {
    fn from(r: Result<Reply, CallError>) -> Reply {
        match r {
            Ok(reply) => reply,
            Err(CallError::Plugin(error)) => Reply::Error { error },
            Err(CallError::Panic(message)) => Reply::Panic { message },
            Err(CallError::Protocol(message) | CallError::Crash(message)) => {
                Reply::Protocol { message }
            }
        }
    }
}

/// The child's side: `tallyd plugin-host --library PATH`. Serves frames until
/// stdin closes.
pub fn serve_child(library: &Path, memory_limit_mb: u64) -> Result<(), String> {
    if memory_limit_mb > 0 {
        let bytes = memory_limit_mb.saturating_mul(1024 * 1024);
        rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes)
            .map_err(|e| format!("cannot limit memory to {memory_limit_mb} MiB: {e}"))?;
    }
    let lib = Arc::new(load(library).map_err(|e| e.to_string())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let services = HostServices {
        http: crate::http_agent(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(90),
        ),
        runtime: Some(runtime.handle().clone()),
        clock: Arc::new(tally_domain::clock::SystemClock),
        // The daemon redacts what it receives from the child.
        redact: Arc::new(|s: &str| s.to_owned()),
        http_timeout: std::time::Duration::from_secs(30),
        // The child's own: the daemon's gate does not reach into it.
        gate: Arc::new(crate::HttpGate::new(
            tally_config::Config::DEFAULT_HTTP_PER_HOST_CONCURRENCY,
            None,
        )),
    };
    let mut instance: Option<SourceInstance> = None;
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let line = line.map_err(|e| format!("reading a frame: {e}"))?;
        let reply: Reply = match serde_json::from_str::<Frame>(&line) {
            Err(e) => Reply::Protocol {
                message: format!("undecodable frame: {e}"),
            },
            Ok(Frame::Create { source, settings }) => {
                SourceInstance::create(lib.clone(), &source, &settings, services.clone())
                    .map(|i| {
                        let created = i.created.clone();
                        instance = Some(i);
                        Reply::Created { created }
                    })
                    .into()
            }
            Ok(Frame::Collect { request }) => match &instance {
                None => Reply::Protocol {
                    message: "collect before create".to_owned(),
                },
                Some(i) => i
                    .collect_blocking(&request)
                    .map(|response| Reply::Collected { response })
                    .into(),
            },
        };
        let mut out = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
        out.push(b'\n');
        stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("writing a reply: {e}"))?;
    }
    Ok(())
}

struct ChildIo {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The daemon's side: one source's plugin in a child process, restarted
/// after a crash or a kill.
pub struct ProcessInstance {
    exe: PathBuf,
    library: PathBuf,
    source: String,
    settings: tally_config::Settings,
    memory_limit_mb: u64,
    redact: super::Redact,
    /// Held by a call for its whole duration.
    io: Mutex<Option<ChildIo>>,
    /// Separate from `io`, so that `cancel` can kill a child a call is blocked on.
    child: Arc<Mutex<Option<Child>>>,
    pub created: Created,
}

impl ProcessInstance {
    /// Starts the child and creates the plugin instance in it (the plugin
    /// validates its settings there, so a crash in `new` is contained too).
    pub fn create(
        exe: PathBuf,
        library: PathBuf,
        source: &str,
        settings: &tally_config::Settings,
        memory_limit_mb: u64,
        redact: super::Redact,
    ) -> Result<ProcessInstance, CallError> {
        let mut p = ProcessInstance {
            exe,
            library,
            source: source.to_owned(),
            settings: settings.clone(),
            memory_limit_mb,
            redact,
            io: Mutex::new(None),
            child: Arc::new(Mutex::new(None)),
            created: Created::default(),
        };
        let io = p.spawn()?;
        p.created = io;
        Ok(p)
    }

    /// Starts a child and sends it `create`; the child's I/O is kept for the next calls.
    fn spawn(&self) -> Result<Created, CallError> {
        let mut child = Command::new(&self.exe)
            .arg("plugin-host")
            .arg("--library")
            .arg(&self.library)
            .arg("--memory-limit-mb")
            .arg(self.memory_limit_mb.to_string())
            .arg("--log-format")
            .arg("json")
            // Every plugin line goes to the daemon, whose own filter then applies.
            .env("RUST_LOG", "warn,tally::plugin=trace")
            // A crash is reported by its signal; a backtrace per crash is noise.
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                CallError::Crash(format!(
                    "cannot start {} plugin-host: {e}",
                    self.exe.display()
                ))
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(CallError::Crash("the plugin host has no pipes".to_owned()));
        };
        relay_log(stderr, self.source.clone(), self.redact.clone());
        *lock(&self.child) = Some(child);
        let mut io = ChildIo {
            stdin,
            stdout: BufReader::new(stdout),
        };
        let reply = self.exchange(
            &mut io,
            &Frame::Create {
                source: self.source.clone(),
                settings: self.settings.clone(),
            },
        )?;
        match reply {
            Reply::Created { created } => {
                *lock(&self.io) = Some(io);
                Ok(created)
            }
            other => Err(reply_error(other)),
        }
    }

    /// One collection run in the child. Blocks: call it from a blocking-pool thread.
    pub fn collect_blocking(&self, request: &CollectRequest) -> Result<CollectResponse, CallError> {
        let mut guard = lock(&self.io);
        if guard.is_none() {
            drop(guard);
            self.spawn()?;
            guard = lock(&self.io);
        }
        let Some(io) = guard.as_mut() else {
            return Err(CallError::Crash("the plugin host did not start".to_owned()));
        };
        let result = self.exchange(
            io,
            &Frame::Collect {
                request: request.clone(),
            },
        );
        match result {
            Ok(Reply::Collected { response }) => Ok(response),
            Ok(other) => Err(reply_error(other)),
            Err(e) => {
                // The child is gone or unusable: the next run starts a new one.
                *guard = None;
                Err(e)
            }
        }
    }

    /// Kills the child: a hard stop for a run that timed out.
    pub fn cancel(&self) {
        if let Some(child) = lock(&self.child).as_mut() {
            let _ = child.kill();
        }
    }

    fn exchange(&self, io: &mut ChildIo, frame: &Frame) -> Result<Reply, CallError> {
        let mut line = serde_json::to_vec(frame)
            .map_err(|e| CallError::Protocol(format!("cannot encode a frame: {e}")))?;
        line.push(b'\n');
        let sent = io.stdin.write_all(&line).and_then(|()| io.stdin.flush());
        let mut answer = String::new();
        let read = sent.and_then(|()| io.stdout.read_line(&mut answer));
        match read {
            Ok(n) if n > 0 => serde_json::from_str(&answer).map_err(|e| {
                CallError::Protocol(format!("undecodable reply from the plugin host: {e}"))
            }),
            _ => Err(CallError::Crash(self.reap())),
        }
    }

    /// Waits for a child whose pipe closed and says how it ended.
    fn reap(&self) -> String {
        let mut slot = lock(&self.child);
        let Some(mut child) = slot.take() else {
            return "the plugin process is gone".to_owned();
        };
        let status = child.wait();
        match status {
            Ok(status) => describe_exit(status),
            Err(e) => format!("the plugin process is gone: {e}"),
        }
    }
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                4 => " (SIGILL)",
                6 => " (SIGABRT: abort)",
                9 => " (SIGKILL: killed, or out of memory)",
                11 => " (SIGSEGV: invalid memory access)",
                _ => "",
            };
            return format!("the plugin process crashed: killed by signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("the plugin process exited with status {code}"),
        None => "the plugin process ended".to_owned(),
    }
}

fn reply_error(reply: Reply) -> CallError {
    match reply {
        Reply::Error { error } => CallError::Plugin(error),
        Reply::Panic { message } => CallError::Panic(message),
        Reply::Protocol { message } => CallError::Protocol(message),
        Reply::Created { .. } | Reply::Collected { .. } => {
            CallError::Protocol("the plugin host answered out of turn".to_owned())
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Re-logs the child's JSON log lines under the source's name; anything else
/// it writes (a runtime's abort message) is logged as a warning.
fn relay_log(stderr: std::process::ChildStderr, source: String, redact: super::Redact) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Decoded first, redacted after: in the JSON line a secret holding
            // `"` or `\` is escaped, and the message logged is the decoded one.
            let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
            let (level, message) = match &parsed {
                Some(v) => (
                    v["level"].as_str().unwrap_or("INFO").to_owned(),
                    v["fields"]["message"].as_str().unwrap_or(&line).to_owned(),
                ),
                None => ("WARN".to_owned(), line.clone()),
            };
            let message = redact(&message);
            let source = source.as_str();
            match level.as_str() {
                "ERROR" => tracing::error!(target: "tally::plugin", source, "{message}"),
                "WARN" => tracing::warn!(target: "tally::plugin", source, "{message}"),
                "DEBUG" => tracing::debug!(target: "tally::plugin", source, "{message}"),
                "TRACE" => tracing::trace!(target: "tally::plugin", source, "{message}"),
                _ => tracing::info!(target: "tally::plugin", source, "{message}"),
            }
        }
    });
}
