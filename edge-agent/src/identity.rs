//! The box's identity: its box id, made at first start and kept for the life of its storage
//! (a file beside the database, so a new database is a new stream of the same box), and,
//! once the owner claims it, the shop it belongs to with its own broker credentials.
//!
//! The file is JSON, readable by root and the daemon's user only (it holds the broker
//! password), and replaced atomically (written aside, synced, renamed), so a power cut leaves
//! the old identity or the new one. The daemon and `tastesync-edge claim` (another process)
//! may both write it; each reloads it when it changes on disk.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tastesync_shared::wire::is_valid_id;
use tokio::sync::Notify;

use crate::Millis;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `tsb-` and 16 random base32 characters (80 bits): unique across any fleet.
    pub box_id: String,
    /// Set by a successful claim.
    #[serde(default)]
    pub claim: Option<Claim>,
    /// HQ revoked the box (the broker refuses it): it works offline until claimed again.
    #[serde(default)]
    pub revoked_at_ms: Option<Millis>,
}

/// What the cloud gave the box when it was claimed.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub shop_id: String,
    /// `host:port`.
    pub broker: String,
    pub broker_tls: bool,
    /// The CA to trust for the broker (PEM); none: the system's roots.
    #[serde(default)]
    pub broker_ca_pem: Option<String>,
    /// The box's own broker user and password (none: a broker without authentication).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The provisioning API that answered, asked again if the broker refuses the box.
    pub cloud_url: String,
    pub claimed_at_ms: Millis,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("shop_id", &self.shop_id)
            .field("broker", &self.broker)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .finish_non_exhaustive()
    }
}

/// Where the box stands, as the owner's page and `tastesync-edge identity` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// No shop yet: "Claim this box".
    Setup,
    /// Claimed for a shop through the cloud.
    Claimed,
    /// Set up by hand (`shop_id` in the config).
    Configured,
    /// HQ revoked it; it works offline and may be claimed again.
    Revoked,
}

impl Identity {
    fn new() -> Identity {
        Identity {
            box_id: new_box_id(),
            claim: None,
            revoked_at_ms: None,
        }
    }

    /// Where the box stands, given the shop id of its config (empty: none).
    pub fn standing(&self, configured_shop: &str) -> Standing {
        match (&self.claim, self.revoked_at_ms) {
            _ if !configured_shop.is_empty() => Standing::Configured,
            (Some(_), Some(_)) => Standing::Revoked,
            (Some(_), None) => Standing::Claimed,
            (None, _) => Standing::Setup,
        }
    }

    /// The shop the box works for: the config's, else the claim's.
    pub fn shop_id<'a>(&'a self, configured_shop: &'a str) -> Option<&'a str> {
        if configured_shop.is_empty() {
            self.claim.as_ref().map(|c| c.shop_id.as_str())
        } else {
            Some(configured_shop)
        }
    }
}

/// `tsb-xxxx-xxxx-xxxx-xxxx` with 80 random bits.
fn new_box_id() -> String {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).expect("the OS random number generator");
    let symbols = tastesync_shared::typed_code::from_random(&random).to_ascii_lowercase();
    let groups: Vec<&str> = (0..4).map(|i| &symbols[i * 4..i * 4 + 4]).collect();
    format!("tsb-{}", groups.join("-"))
}

/// The identity file, shared by the daemon's tasks, noticing writes by other processes.
pub struct IdentityFile {
    path: PathBuf,
    state: Mutex<(Identity, Option<SystemTime>)>,
    changed: Notify,
}

impl IdentityFile {
    /// Loads the file, creating it with a new box id if there is none. A damaged file is an
    /// error, never replaced: it may hold the claim.
    pub fn open(path: &Path) -> anyhow::Result<IdentityFile> {
        let identity = match read(path)? {
            Some(identity) => identity,
            None => {
                let identity = Identity::new();
                write(path, &identity)?;
                tracing::info!(box_id = identity.box_id, "new box identity");
                identity
            }
        };
        Ok(IdentityFile {
            path: path.to_path_buf(),
            state: Mutex::new((identity, modified(path))),
            changed: Notify::new(),
        })
    }

    pub fn get(&self) -> Identity {
        self.state.lock().expect("identity").0.clone()
    }

    /// Replaces the identity on disk, then in memory, and wakes whoever waits for a change.
    pub fn save(&self, identity: Identity) -> anyhow::Result<()> {
        write(&self.path, &identity)?;
        *self.state.lock().expect("identity") = (identity, modified(&self.path));
        self.changed.notify_waiters();
        Ok(())
    }

    /// Rereads the file if another process changed it; returns whether it did.
    pub fn refresh(&self) -> anyhow::Result<bool> {
        let stamp = modified(&self.path);
        if stamp == self.state.lock().expect("identity").1 {
            return Ok(false);
        }
        let Some(identity) = read(&self.path)? else {
            return Ok(false);
        };
        let mut state = self.state.lock().expect("identity");
        let changed = state.0 != identity;
        *state = (identity, stamp);
        drop(state);
        if changed {
            self.changed.notify_waiters();
        }
        Ok(changed)
    }

    /// Waits until the identity changes (in this process, or, checked four times a second
    /// (a `stat`), on disk: `tastesync-edge claim` runs as another process).
    pub async fn changed(&self) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut every = tokio::time::interval(std::time::Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = &mut notified => return,
                _ = every.tick() => {
                    match self.refresh() {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(e) => tracing::warn!("{e:#}"),
                    }
                }
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> anyhow::Result<Option<Identity>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let damaged = |reason: String| {
        anyhow::anyhow!(
            "the box identity file {} is damaged ({reason}); restore it from a backup, or move it \
             away to give the box a new identity (it must then be claimed again)",
            path.display()
        )
    };
    let identity: Identity = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
    if !is_valid_id(&identity.box_id) {
        return Err(damaged("invalid box_id".into()));
    }
    if identity
        .claim
        .as_ref()
        .is_some_and(|c| !is_valid_id(&c.shop_id))
    {
        return Err(damaged("invalid shop_id".into()));
    }
    Ok(Some(identity))
}

fn write(path: &Path, identity: &Identity) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(identity).expect("an identity serialises");
    write_private(path, &bytes)
        .with_context(|| format!("cannot write the box identity {}", path.display()))
}

/// Writes a file of secrets atomically, readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".new");
    let aside = std::path::PathBuf::from(aside);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&aside)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)?;
        if let Some(dir) = dir {
            std::fs::File::open(dir)?.sync_all()?;
        }
        std::io::Result::Ok(())
    })();
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_box_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box.json");
        let first = IdentityFile::open(&path).unwrap().get();
        assert!(is_valid_id(&first.box_id) && first.box_id.starts_with("tsb-"));
        assert_eq!(first.box_id.len(), 23);
        assert_eq!(IdentityFile::open(&path).unwrap().get(), first);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the file may hold the broker password");
        assert_ne!(
            IdentityFile::open(&dir.path().join("other.json"))
                .unwrap()
                .get()
                .box_id,
            first.box_id
        );
    }

    #[test]
    fn a_damaged_file_is_explained_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box.json");
        std::fs::write(&path, "{\"box_id\": \"a/b\"}").unwrap();
        let error = format!("{:#}", IdentityFile::open(&path).err().unwrap());
        assert!(error.contains("damaged"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"box_id\": \"a/b\"}"
        );
    }

    #[test]
    fn another_process_writing_is_noticed_and_passwords_stay_out_of_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box.json");
        let daemon = IdentityFile::open(&path).unwrap();
        let other = IdentityFile::open(&path).unwrap();
        let mut identity = other.get();
        identity.claim = Some(Claim {
            shop_id: "seoul-1".into(),
            broker: "127.0.0.1:1883".into(),
            broker_tls: false,
            broker_ca_pem: None,
            username: Some(identity.box_id.clone()),
            password: Some("s3cret".into()),
            cloud_url: "https://cloud.example".into(),
            claimed_at_ms: 1,
        });
        // Make sure the modification time moves even on a coarse file system clock.
        std::thread::sleep(std::time::Duration::from_millis(20));
        other.save(identity.clone()).unwrap();
        assert!(daemon.refresh().unwrap());
        assert_eq!(daemon.get(), identity);
        assert_eq!(daemon.get().standing(""), Standing::Claimed);
        assert_eq!(daemon.get().standing("by-hand"), Standing::Configured);
        assert!(!format!("{:?}", daemon.get()).contains("s3cret"));
    }
}
