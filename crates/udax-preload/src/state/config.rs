//! The configuration: `UDAX_MOUNT` and `UDAX_DEVICE`, read once.

use crate::state::lexical::normalise;
use std::sync::OnceLock;

pub struct Config {
    /// Normalised, no trailing slash, never "/".
    pub mount: String,
    pub device: String,
}

impl Config {
    /// Inner udax path `inner` as the program spells it: under the prefix.
    pub fn outer(&self, inner: &str) -> String {
        if inner == "/" {
            self.mount.clone()
        } else {
            format!("{}{inner}", self.mount)
        }
    }
}

/// `None`: `UDAX_MOUNT` or `UDAX_DEVICE` unset (or the mount unusable): the
/// shim forwards everything.
pub fn config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mount = std::env::var("UDAX_MOUNT").ok()?;
            let device = std::env::var("UDAX_DEVICE").ok()?;
            let mount = normalise(mount.as_bytes());
            if !mount.starts_with('/') || mount == "/" {
                crate::boundary::entry::init_log();
                tracing::error!(
                    "udax-preload: UDAX_MOUNT={mount:?} must be an absolute path other than /; shim disabled"
                );
                return None;
            }
            Some(Config { mount, device })
        })
        .as_ref()
}
