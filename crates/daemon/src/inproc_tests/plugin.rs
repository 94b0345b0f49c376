//! `scripted`: a plugin written against the real SDK and linked into the
//! test binary ([`PluginLibrary::linked`]), whose answers a test writes in
//! advance and whose calls it reads back, with the time each call saw
//! through `host.now()` (the daemon's clock).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, LazyLock, Mutex};

use chrono::{DateTime, Utc};
use tally_plugin::abi::StaticDescriptor;
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, IndicatorDecl, Kind, Observation,
    Plugin,
};

use tally_host::{PluginLibrary, PluginRegistry};

/// What one call answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// One observation of indicator `x` on the window's last day.
    Value(f64),
    /// An `upstream` error: transient, retried within the run.
    Upstream,
    /// A `settings` error: the same every time, never retried.
    Settings,
    /// Blocks until [`Script::release`], then answers `Value(1.0)`.
    Hold,
}

/// The answers of one script, in order, then `then` for every later call;
/// and the time of every call.
#[derive(Debug)]
pub struct Script {
    plan: Mutex<VecDeque<Answer>>,
    then: Answer,
    calls: Mutex<Vec<DateTime<Utc>>>,
    released: (Mutex<bool>, Condvar),
}

impl Script {
    /// Registers script `name` (unique per test: tests share the process).
    pub fn new(name: &str, plan: &[Answer], then: Answer) -> Arc<Script> {
        let script = Arc::new(Script {
            plan: Mutex::new(plan.iter().copied().collect()),
            then,
            calls: Mutex::new(Vec::new()),
            released: (Mutex::new(false), Condvar::new()),
        });
        SCRIPTS
            .lock()
            .unwrap()
            .insert(name.to_owned(), script.clone());
        script
    }

    /// When each call so far was made, by the daemon's clock.
    pub fn calls(&self) -> Vec<DateTime<Utc>> {
        self.calls.lock().unwrap().clone()
    }

    /// Lets calls held by [`Answer::Hold`] answer.
    pub fn release(&self) {
        *self.released.0.lock().unwrap() = true;
        self.released.1.notify_all();
    }

    fn hold(&self) {
        let mut released = self.released.0.lock().unwrap();
        while !*released {
            released = self.released.1.wait(released).unwrap();
        }
    }

    fn answer(&self, at: DateTime<Utc>) -> (usize, Answer) {
        let mut calls = self.calls.lock().unwrap();
        calls.push(at);
        let answer = self.plan.lock().unwrap().pop_front().unwrap_or(self.then);
        (calls.len(), answer)
    }
}

static SCRIPTS: LazyLock<Mutex<HashMap<String, Arc<Script>>>> = LazyLock::new(Default::default);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    script: String,
    /// Refused when negative: a settings error a reload must report.
    #[serde(default)]
    scale: f64,
}

pub struct Scripted {
    script: Arc<Script>,
}

impl Plugin for Scripted {
    const NAME: &'static str = "scripted";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("answers as its test script says").indicator(IndicatorDecl::new(
            "x",
            "计数",
            Kind::Count,
            "次",
        ))
    }

    fn new(settings: Settings, _: &Host) -> Result<Self, Error> {
        if settings.scale < 0.0 {
            return Err(Error::settings(format!(
                "scale: must not be negative, got {}",
                settings.scale
            )));
        }
        let script = SCRIPTS
            .lock()
            .unwrap()
            .get(&settings.script)
            .cloned()
            .ok_or_else(|| Error::settings(format!("script: no script {:?}", settings.script)))?;
        Ok(Scripted { script })
    }

    fn collect(&mut self, request: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        let (call, answer) = self.script.answer(host.now());
        let answer = match answer {
            Answer::Hold => {
                self.script.hold();
                Answer::Value(1.0)
            }
            other => other,
        };
        match answer {
            Answer::Hold => unreachable!("answered above"),
            Answer::Value(v) => Ok(CollectResponse {
                observations: vec![Observation::new("x", request.window.to, v)],
                ..CollectResponse::default()
            }),
            Answer::Upstream => Err(Error::upstream(format!("call {call}: platform down"))),
            Answer::Settings => Err(Error::settings(format!("call {call}: account closed"))),
        }
    }
}

static SCRIPTED: StaticDescriptor = StaticDescriptor::new::<Scripted>("1.0.0", true);

/// A registry holding `scripted` only.
pub fn registry() -> PluginRegistry {
    PluginRegistry::from_libraries(vec![PluginLibrary::linked(&SCRIPTED).unwrap()])
}
