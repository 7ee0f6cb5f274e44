//! What the machine's idle handling does to a wake-up, printed before the figures: on a virtual
//! machine whose idle cores halt at once, every wake-up of an idle core is an exit to the host,
//! and latency at one call in flight measures mostly that.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where the haltpoll driver's polling time is set (root only).
const HALT_POLL_NS: &str = "module/haltpoll/parameters/guest_halt_poll_ns";

/// How long idle cores poll while [`HaltPolling`] is on: the kernel's default for the
/// haltpoll driver.
pub(crate) const POLL_NS: u64 = 200_000;

/// The CPU idle settings that decide what a wake-up costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdleSettings {
    /// The cpuidle driver (`haltpoll`, `intel_idle`, `acpi_idle`, ...), when the kernel says.
    pub(crate) driver: Option<String>,
    /// With the `haltpoll` driver: how long an idle core polls before it halts, in ns.
    pub(crate) halt_poll_ns: Option<u64>,
}

impl IdleSettings {
    /// Reads the settings from sysfs; what the kernel does not expose stays `None`.
    pub(crate) fn read() -> Self {
        Self::read_from(Path::new("/sys"))
    }

    fn read_from(sys: &Path) -> Self {
        let read = |relative: &str| {
            std::fs::read_to_string(sys.join(relative))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        Self {
            driver: read("devices/system/cpu/cpuidle/current_driver"),
            halt_poll_ns: read(HALT_POLL_NS).and_then(|s| s.parse().ok()),
        }
    }

    /// True when an idle core halts without polling first: each wake-up is a VM exit.
    pub(crate) fn halts_at_once(&self) -> bool {
        self.driver.as_deref() == Some("haltpoll") && self.halt_poll_ns == Some(0)
    }

    /// One line for the top of a report.
    pub(crate) fn describe(&self) -> String {
        let driver = self.driver.as_deref().unwrap_or("unknown");
        let mut line = format!("cpuidle driver {driver}");
        if let Some(ns) = self.halt_poll_ns {
            line.push_str(&format!(", guest_halt_poll_ns {ns}"));
        }
        if self.halts_at_once() {
            line.push_str(
                " (idle cores halt without polling: every wake-up is a VM exit, which dominates \
                 latency at 1 in flight; see README, Performance)",
            );
        }
        line
    }

    /// A few words to print beside a latency figure: `halt at once: guest_halt_poll_ns 0`.
    pub(crate) fn describe_short(&self) -> String {
        match (self.driver.as_deref(), self.halt_poll_ns) {
            (Some("haltpoll"), Some(0)) => "halt at once: guest_halt_poll_ns 0".to_owned(),
            (Some("haltpoll"), Some(ns)) => format!("poll first: guest_halt_poll_ns {ns}"),
            (Some(driver), _) => format!("cpuidle driver {driver}"),
            (None, _) => "cpuidle driver unknown".to_owned(),
        }
    }

    /// The settings for the JSON figures.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpuidle_driver": self.driver,
            "guest_halt_poll_ns": self.halt_poll_ns,
        })
    }
}

/// Idle cores polling for a while before they halt, for as long as this lives: writes the
/// haltpoll driver's `guest_halt_poll_ns` (a machine-wide setting; root only) and puts back
/// the value it found when dropped.
#[derive(Debug)]
pub(crate) struct HaltPolling {
    path: PathBuf,
    previous: String,
}

impl HaltPolling {
    /// Sets `guest_halt_poll_ns` to `ns`; an error says why it cannot be (not the haltpoll
    /// driver, not root).
    pub(crate) fn set(ns: u64) -> anyhow::Result<Self> {
        Self::set_in(Path::new("/sys"), ns)
    }

    fn set_in(sys: &Path, ns: u64) -> anyhow::Result<Self> {
        let path = sys.join(HALT_POLL_NS);
        let previous = std::fs::read_to_string(&path)
            .with_context(|| format!("{} (no haltpoll cpuidle driver?)", path.display()))?
            .trim()
            .to_owned();
        std::fs::write(&path, ns.to_string())
            .with_context(|| format!("writing {} (needs root)", path.display()))?;
        Ok(Self { path, previous })
    }
}

impl Drop for HaltPolling {
    fn drop(&mut self) {
        if let Err(error) = std::fs::write(&self.path, &self.previous) {
            eprintln!(
                "could not restore {} to {}: {error}",
                self.path.display(),
                self.previous
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs(driver: Option<&str>, poll: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(driver) = driver {
            let path = dir.path().join("devices/system/cpu/cpuidle");
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("current_driver"), format!("{driver}\n")).unwrap();
        }
        if let Some(poll) = poll {
            let path = dir.path().join("module/haltpoll/parameters");
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("guest_halt_poll_ns"), format!("{poll}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn a_haltpoll_guest_that_never_polls_is_flagged() {
        let dir = sysfs(Some("haltpoll"), Some("0"));
        let settings = IdleSettings::read_from(dir.path());
        assert_eq!(settings.driver.as_deref(), Some("haltpoll"));
        assert_eq!(settings.halt_poll_ns, Some(0));
        assert!(settings.halts_at_once());
        assert!(settings.describe().contains("every wake-up is a VM exit"));
    }

    #[test]
    fn a_polling_guest_or_bare_metal_is_not() {
        let polling = IdleSettings::read_from(sysfs(Some("haltpoll"), Some("200000")).path());
        assert!(!polling.halts_at_once());
        assert_eq!(
            polling.describe(),
            "cpuidle driver haltpoll, guest_halt_poll_ns 200000"
        );
        let metal = IdleSettings::read_from(sysfs(Some("intel_idle"), None).path());
        assert!(!metal.halts_at_once());
        assert_eq!(metal.describe(), "cpuidle driver intel_idle");
        let unknown = IdleSettings::read_from(sysfs(None, None).path());
        assert_eq!(unknown.describe(), "cpuidle driver unknown");
    }

    #[test]
    fn polling_is_set_and_restored() {
        let dir = sysfs(Some("haltpoll"), Some("0"));
        {
            let _polling = HaltPolling::set_in(dir.path(), POLL_NS).unwrap();
            assert_eq!(
                IdleSettings::read_from(dir.path()).halt_poll_ns,
                Some(POLL_NS)
            );
        }
        assert_eq!(IdleSettings::read_from(dir.path()).halt_poll_ns, Some(0));
        let error = HaltPolling::set_in(sysfs(Some("intel_idle"), None).path(), POLL_NS)
            .unwrap_err()
            .to_string();
        assert!(error.contains("no haltpoll cpuidle driver"), "{error}");
    }
}
