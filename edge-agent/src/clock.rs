//! The box's clock, and when to trust it.
//!
//! A Raspberry Pi has no real-time clock: it boots at the time it last saved (or at 1970),
//! and network time may come minutes or days later, as one step of hours. So the box keeps
//! two clocks:
//!
//! - **steady time** ([`steady_ms`]): starts at the best wall time known at start and then
//!   only moves with the monotonic clock. Everything that measures a duration runs on it:
//!   presence (dwell, absence), sessions, pairing tickets, rate limits. A step of the system
//!   clock never ends a visit or announces a customer again.
//! - **wall time** ([`now_ms`]): what durable records are stamped with. Once the system clock
//!   is synchronised it is the system clock. Before that it is *provisional*: steady time,
//!   which starts no earlier than this release's date and the latest time already in the
//!   store, so it never runs backwards across restarts. When the clock synchronises,
//!   [`Trust::watch`] reports the correction; the daemon's store thread rewrites this run's
//!   provisional stamps by it (visits, outbox, tablet logs), then [`apply`]s it, and the
//!   uplink, which held those events back, sends them with the right times.
//!
//! Without [`start_trusted`] or [`start_provisional`] (the command-line tools, unit tests)
//! both are the system clock.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::Millis;

/// This release's date (UTC): a clock before it has certainly never been set.
pub const RELEASED: (i64, i64, i64) = (2026, 12, 4);

/// [`RELEASED`] in [`Millis`].
pub fn released_ms() -> Millis {
    let (y, m, d) = RELEASED;
    tastesync_shared::days::days_from_civil(y, m, d) as Millis * 86_400_000
}

/// The system clock, unconditionally.
pub fn system_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Time since the machine booted, suspend included (`CLOCK_BOOTTIME`): a restart in the same
/// boot can tell how long it was stopped even when the wall clock is wrong.
pub fn boot_ms() -> Millis {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every Linux
    // this runs on (2.6.39+).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as Millis * 1000 + ts.tv_nsec as Millis / 1_000_000
}

struct BoxClock {
    started: Instant,
    /// Steady time at `started`.
    origin_ms: Millis,
    /// Wall time minus steady time: 0 while provisional; followed at every tick once trusted.
    correction_ms: AtomicI64,
    trusted: AtomicBool,
    /// Rows stamped from this on are moved by the correction when the clock synchronises.
    correct_from: Millis,
    /// Events stamped from this on wait for the correction (`i64::MAX`: none).
    held_from: AtomicI64,
}

static CLOCK: OnceLock<BoxClock> = OnceLock::new();

/// Starts the box's clocks on a synchronised system clock (once per process).
pub fn start_trusted() {
    let _ = CLOCK.set(BoxClock {
        started: Instant::now(),
        origin_ms: system_ms(),
        correction_ms: AtomicI64::new(0),
        trusted: AtomicBool::new(true),
        correct_from: Millis::MAX,
        held_from: AtomicI64::new(i64::MAX),
    });
}

/// Starts the box's clocks on an unsynchronised system clock (once per process), as
/// [`Provisional::plan`] planned.
pub fn start_provisional(provisional: Provisional) {
    let _ = CLOCK.set(BoxClock {
        started: Instant::now(),
        origin_ms: provisional.origin_ms,
        correction_ms: AtomicI64::new(0),
        trusted: AtomicBool::new(false),
        correct_from: provisional.correct_from,
        held_from: AtomicI64::new(provisional.held_from as i64),
    });
}

/// Where an earlier run on an unsynchronised clock left its provisional timeline (kept in
/// the store until the clock synchronises).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Its first provisional stamp.
    pub since_ms: Millis,
    /// A point of it: this steady time was at `boot_ms` since boot.
    pub at_ms: Millis,
    pub boot_ms: Millis,
}

impl Anchor {
    /// Where its timeline stands now, if this is still its boot. A later boot may have run
    /// longer than the anchor's time since boot (a restored backup, a box off and on): then
    /// the store holds stamps (`floor`) past where the timeline would stand, and it is not.
    fn continued(&self, boot: Millis, floor: Millis) -> Option<Millis> {
        let now = self.at_ms + boot.checked_sub(self.boot_ms)?;
        (now >= floor).then_some(now)
    }
}

/// A start on an unsynchronised clock: steady time from `origin_ms`; stamps from
/// `correct_from` on are corrected at synchronisation; events stamped from `held_from` on
/// wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provisional {
    pub origin_ms: Millis,
    pub correct_from: Millis,
    pub held_from: Millis,
}

impl Provisional {
    /// Plans a start on an unsynchronised clock. In the same boot as an earlier provisional
    /// run (a restart, an upgrade, a crash), the timeline goes on from it by the time since
    /// boot, so one correction fits both. After a reboot it starts after everything stored
    /// (`floor`) and this release's date; the earlier run's stamps cannot be corrected any
    /// more, but they still wait for the clock, so the cloud never gets a time before the
    /// box knows it is about right.
    pub fn plan(anchor: Option<Anchor>, floor: Millis, system: Millis, boot: Millis) -> Self {
        let fresh = system.max(floor.max(released_ms()) + 1);
        match anchor {
            Some(a) if let Some(now) = a.continued(boot, floor) => Provisional {
                origin_ms: now,
                correct_from: a.since_ms,
                held_from: a.since_ms,
            },
            Some(a) => Provisional {
                origin_ms: fresh,
                correct_from: fresh,
                held_from: a.since_ms.min(fresh),
            },
            None => Provisional {
                origin_ms: fresh,
                correct_from: fresh,
                held_from: fresh,
            },
        }
    }

    /// The anchor to keep in the store for a later run.
    pub fn anchor(&self, boot: Millis) -> Anchor {
        Anchor {
            since_ms: self.held_from,
            at_ms: self.origin_ms,
            boot_ms: boot,
        }
    }
}

/// The correction for an earlier provisional run found at a start on a synchronised clock:
/// possible in the same boot only (`floor`: the store's latest stamp).
pub fn correction_at_start(
    anchor: Anchor,
    system: Millis,
    boot: Millis,
    floor: Millis,
) -> Option<Correction> {
    let now = anchor.continued(boot, floor)?;
    Some(Correction {
        since: anchor.since_ms,
        delta_ms: system as i64 - now as i64,
    })
}

/// Steady time: for durations. Never steps.
pub fn steady_ms() -> Millis {
    match CLOCK.get() {
        Some(clock) => clock.origin_ms + clock.started.elapsed().as_millis() as Millis,
        None => system_ms(),
    }
}

/// Wall time: for durable stamps (see the module's notes).
pub fn now_ms() -> Millis {
    match CLOCK.get() {
        Some(clock) if clock.trusted.load(Ordering::Relaxed) => system_ms(),
        Some(_) => steady_ms(),
        None => system_ms(),
    }
}

/// Wall time minus steady time: what turns a steady stamp into a wall one.
pub fn correction_ms() -> i64 {
    CLOCK
        .get()
        .map_or(0, |c| c.correction_ms.load(Ordering::Relaxed))
}

/// Whether wall time is the synchronised system clock.
pub fn is_trusted() -> bool {
    CLOCK
        .get()
        .is_none_or(|c| c.trusted.load(Ordering::Relaxed))
}

/// Events stamped from this on wait for the clock to synchronise (`Millis::MAX`: none).
pub fn held_from() -> Millis {
    CLOCK.get().map_or(Millis::MAX, |c| {
        c.held_from.load(Ordering::Relaxed) as Millis
    })
}

/// The clock's state in a few words, for the owner page and the metrics.
pub fn describe() -> String {
    if is_trusted() {
        "synchronised".into()
    } else {
        "not synchronised yet: visits get provisional times, corrected and sent to the cloud \
         once network time arrives"
            .into()
    }
}

/// What this run's provisional stamps are to be moved by, once the clock synchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Correction {
    /// Rows stamped at or after this are provisional.
    pub since: Millis,
    /// Added to each of them.
    pub delta_ms: i64,
}

/// When the system clock counts as right (`[clock] trusted_when`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TrustedWhen {
    /// `"ntp"` (the default) or `"always"`.
    Named(TrustName),
    /// The path of a flag file that exists once the clock is right.
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustName {
    /// systemd-timesyncd's flag file, or systemd-timedated's `NTPSynchronized` (which reads
    /// the kernel's flag, so chrony and ntpd count too).
    Ntp,
    /// A box with a battery-backed clock and no network time.
    Always,
}

impl Default for TrustedWhen {
    fn default() -> Self {
        TrustedWhen::Named(TrustName::Ntp)
    }
}

/// The flag file systemd-timesyncd creates at its first synchronisation after boot.
const TIMESYNCD_FLAG: &str = "/run/systemd/timesync/synchronized";
/// How often systemd-timedated is asked while the clock is not synchronised.
const ASK_TIMEDATED_EVERY: Duration = Duration::from_secs(30);

impl TrustedWhen {
    /// Whether the system clock is synchronised: `None` when nothing can tell (no systemd).
    pub fn synchronised(&self) -> Option<bool> {
        match self {
            TrustedWhen::Named(TrustName::Always) => Some(true),
            TrustedWhen::File(path) => Some(path.exists()),
            TrustedWhen::Named(TrustName::Ntp) if std::path::Path::new(TIMESYNCD_FLAG).exists() => {
                Some(true)
            }
            TrustedWhen::Named(TrustName::Ntp) => timedated_synchronised(),
        }
    }
}

/// systemd-timedated's view over the system D-Bus (what `timedatectl` shows as "System clock
/// synchronized"); `None` without systemd.
fn timedated_synchronised() -> Option<bool> {
    use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
    let connection = dbus::blocking::Connection::new_system().ok()?;
    let proxy = connection.with_proxy(
        "org.freedesktop.timedate1",
        "/org/freedesktop/timedate1",
        Duration::from_secs(2),
    );
    proxy
        .get::<bool>("org.freedesktop.timedate1", "NTPSynchronized")
        .ok()
}

/// Watches for the clock to synchronise, for the daemon.
///
/// The clock is trusted when what `[clock] trusted_when` names says it is synchronised, or,
/// where nothing can tell (no systemd), when it is at least past this release's date.
pub struct Trust {
    when: TrustedWhen,
    last_asked: Option<Instant>,
    timedated: Option<bool>,
}

impl Trust {
    /// Asks once whether the clock is right now (to start the clocks).
    pub fn new(when: TrustedWhen) -> (Trust, bool) {
        let mut trust = Trust {
            when,
            last_asked: None,
            timedated: None,
        };
        let trusted = trust.ask();
        (trust, trusted)
    }

    fn ask(&mut self) -> bool {
        // As `synchronised`, but timedated's answer is cached between asks.
        let answer = match &self.when {
            TrustedWhen::Named(TrustName::Ntp)
                if !std::path::Path::new(TIMESYNCD_FLAG).exists() =>
            {
                if self
                    .last_asked
                    .is_none_or(|at| at.elapsed() >= ASK_TIMEDATED_EVERY)
                {
                    self.last_asked = Some(Instant::now());
                    self.timedated = timedated_synchronised();
                }
                self.timedated
            }
            other => other.synchronised(),
        };
        answer.unwrap_or_else(|| system_ms() >= released_ms())
    }

    /// Spawns a thread that asks every second until the clock is trusted, then sends the
    /// correction for this run's provisional stamps once and ends (as it does when the
    /// receiver is gone). Asking may block on D-Bus, hence a thread of its own.
    pub fn watch(mut self, corrections: tokio::sync::mpsc::UnboundedSender<Correction>) {
        let watcher = std::thread::Builder::new()
            .name("clock".into())
            .spawn(move || {
                while !corrections.is_closed() {
                    std::thread::sleep(Duration::from_secs(1));
                    if self.ask() {
                        let _ = corrections.send(pending_correction());
                        return;
                    }
                }
            });
        if let Err(e) = watcher {
            tracing::error!("cannot watch the clock (times stay provisional): {e}");
        }
    }
}

/// What would turn this run's provisional stamps into wall time now.
fn pending_correction() -> Correction {
    Correction {
        since: CLOCK.get().map_or(Millis::MAX, |c| c.correct_from),
        delta_ms: system_ms() as i64 - steady_ms() as i64,
    }
}

/// Takes the system clock as wall time from now on, once `correction` has been applied to
/// the stamps made before (by whoever writes them in order: the daemon's store thread).
pub fn apply(correction: Correction) {
    if let Some(clock) = CLOCK.get() {
        clock
            .correction_ms
            .store(correction.delta_ms, Ordering::Relaxed);
        clock.trusted.store(true, Ordering::Relaxed);
        clock.held_from.store(i64::MAX, Ordering::Relaxed);
    }
}

/// Follows the trusted system clock (NTP's slewing, a rare step) for stamps; steady time
/// does not move with it. Call about once a second.
pub fn follow_system() {
    if let Some(clock) = CLOCK.get()
        && clock.trusted.load(Ordering::Relaxed)
    {
        let correction = system_ms() as i64 - steady_ms() as i64;
        clock.correction_ms.store(correction, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_when_reads_names_and_paths() {
        #[derive(Deserialize)]
        struct C {
            t: TrustedWhen,
        }
        let parse = |s: &str| toml::from_str::<C>(&format!("t = {s:?}")).map(|c| c.t);
        assert_eq!(parse("ntp").unwrap(), TrustedWhen::Named(TrustName::Ntp));
        assert_eq!(
            parse("always").unwrap(),
            TrustedWhen::Named(TrustName::Always)
        );
        assert_eq!(
            parse("/run/flag").unwrap(),
            TrustedWhen::File("/run/flag".into())
        );
        assert_eq!(
            TrustedWhen::File("/nonexistent/flag".into()).synchronised(),
            Some(false)
        );
    }

    #[test]
    fn a_provisional_timeline_goes_on_in_the_same_boot_and_starts_afresh_after_a_reboot() {
        let day = 86_400_000;
        let released = released_ms();
        let year_2020 = released - 2500 * day;
        // First start: after the release date, whatever the clock says.
        let first = Provisional::plan(None, 0, year_2020, 60_000);
        assert_eq!(first.origin_ms, released + 1);
        assert_eq!(
            (first.correct_from, first.held_from),
            (first.origin_ms, first.origin_ms)
        );
        // A restart 5 minutes later in the same boot: the same timeline, one correction.
        let anchor = first.anchor(60_000);
        let again = Provisional::plan(Some(anchor), released + 9, year_2020, 360_000);
        assert_eq!(again.origin_ms, first.origin_ms + 300_000);
        assert_eq!(again.correct_from, first.origin_ms);
        let correction =
            correction_at_start(anchor, released + day, 360_000, released + 9).unwrap();
        assert_eq!(correction.since, first.origin_ms);
        assert_eq!(correction.delta_ms, (day - 1 - 300_000) as i64);
        // After a reboot: a fresh timeline after everything stored; the older one still held.
        let rebooted = Provisional::plan(Some(anchor), released + day, year_2020, 20_000);
        assert_eq!(rebooted.origin_ms, released + day + 1);
        assert_eq!(rebooted.correct_from, rebooted.origin_ms);
        assert_eq!(rebooted.held_from, first.origin_ms);
        assert_eq!(correction_at_start(anchor, released + day, 20_000, 0), None);
        // A later boot that has run longer (a restored backup, a box off and on) is not
        // taken for the anchor's: the store holds stamps past where its timeline would be.
        let restored = Provisional::plan(Some(anchor), released + day, year_2020, 360_000);
        assert_eq!(restored.origin_ms, released + day + 1);
        assert_eq!(
            correction_at_start(anchor, released + 2 * day, 360_000, released + day),
            None
        );
        // A clock already right (after the release, past the store) is kept as it is.
        let now = released + 30 * day;
        assert_eq!(Provisional::plan(None, released, now, 1).origin_ms, now);
    }

    #[test]
    fn boot_time_moves_forward() {
        let a = boot_ms();
        std::thread::sleep(Duration::from_millis(20));
        let b = boot_ms();
        assert!(b >= a + 20, "{a} {b}");
    }
}
