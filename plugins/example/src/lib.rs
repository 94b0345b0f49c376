//! `example`: the smallest complete tally plugin, quoted by the author guide
//! (`plugins/README.md`). It emits `per_day` for every day of the window, for
//! the source's own unit, as the indicator named in its settings.

use serde::Deserialize;
use tally_plugin::schemars::{self, JsonSchema};
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, Observation, Plugin,
    check_indicator_id, export_plugin,
};

/// `[sources.settings]`, e.g. `indicator = "meetings"`, `per_day = 2.0`.
/// Unknown keys are refused, so a typo is reported instead of ignored.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The indicator id to emit.
    #[schemars(extend("examples" = ["meetings"]))]
    pub indicator: String,
    /// The value of every day, not negative.
    #[schemars(extend("examples" = [2.0]))]
    pub per_day: f64,
}

pub struct Example {
    settings: Settings,
}

impl Plugin for Example {
    const NAME: &'static str = "example";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("emits a constant value every day (the author guide's example)")
            .settings_schema::<Settings>()
    }

    /// Checks the settings; an error names the setting and what is accepted.
    fn new(settings: Settings, _host: &Host) -> Result<Self, Error> {
        check_indicator_id("indicator", &settings.indicator)?;
        if !settings.per_day.is_finite() || settings.per_day < 0.0 {
            return Err(Error::settings("per_day: must be a number, not negative"));
        }
        Ok(Example { settings })
    }

    /// The indicator comes from the settings, so `describe` cannot list it.
    fn emits(&self) -> Vec<String> {
        vec![self.settings.indicator.clone()]
    }

    fn collect(&mut self, req: &CollectRequest, _host: &Host) -> Result<CollectResponse, Error> {
        let mut out = CollectResponse::default();
        for day in req.window.days() {
            let obs = Observation::new(&self.settings.indicator, day, self.settings.per_day);
            out.observations.push(obs);
        }
        Ok(out)
    }
}

export_plugin!(Example);
