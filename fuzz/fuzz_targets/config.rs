//! The TOML configuration on arbitrary UTF-8, as `train --config` reads it: parse, resolve what the
//! model name implies, validate. Every input must give `Ok` or `Err`, never a panic; a configuration
//! that validates must survive a round trip through its TOML form (`config.toml` of a run is reusable
//! with `--config`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaegpu::train::TrainConfig;

fuzz_target!(|text: &str| {
    let Ok(mut cfg) = TrainConfig::from_toml(text) else { return };
    let _ = cfg.validate();
    cfg.resolve();
    if cfg.validate().is_err() {
        return;
    }
    let _ = cfg.folder_options().validate();
    let toml = toml::to_string(&cfg).expect("a valid configuration serialises");
    let again = TrainConfig::from_toml(&toml).expect("a serialised configuration parses");
    assert!(again.validate().is_ok(), "the round trip of a valid configuration is invalid:\n{toml}");
    assert_eq!(toml::to_string(&again).unwrap(), toml, "the round trip changed the configuration");
});
