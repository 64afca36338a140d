//! Record sources: the API (watches) or a directory of manifests. Either yields the same
//! thing, batches of [`Change`]s for the incremental zone: the first full view, then
//! whatever changed, as soon as it is seen (a burst is what was queued by then). A
//! manifest file that fails to load is reported and the last good objects keep serving.
pub mod collector;
pub mod convert;
pub mod kube;
pub mod manifests;
pub mod objects;
pub mod ratelimit;
pub mod settings;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::model::live::{relists, Change, ObjectKind};
pub use convert::Keep;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifests(#[from] manifests::Error),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("every API watch stopped")]
    Closed,
}

/// Changes and when the first of them was seen (its watch event's arrival, or the poll
/// that found a manifest changed): what the programming-latency metric counts from.
pub struct Batch {
    pub changes: Vec<Change>,
    pub seen: Instant,
}

/// Changes drained into one batch at most: a relist of every kind at once still comes
/// through in a few batches, and the answer path never waits on a huge one.
const MAX_BATCH: usize = 4096;

pub enum Source {
    Manifests {
        dir: PathBuf,
        keys: Keep,
        fingerprint: Option<(Option<std::time::SystemTime>, usize)>,
        /// The next poll, kept across cancellations so other events cannot postpone it.
        next_poll: Option<Instant>,
    },
    Kube {
        rx: mpsc::UnboundedReceiver<kube::Timed>,
        kinds: Vec<ObjectKind>,
        health: Arc<kube::WatchHealth>,
        /// What [`Source::first`] has gathered so far: kept here, not in the future, so
        /// a caller that drops the future (a `select!` woken by a timer) loses nothing.
        gathered: Vec<Change>,
        listed: Vec<ObjectKind>,
        /// The watch tasks, stopped when the source is dropped (reopened for new label keys).
        _tasks: Watches,
    },
}

/// Watch tasks that end with their source.
pub struct Watches(Vec<tokio::task::AbortHandle>);

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Source {
    pub fn manifests(dir: &Path, keys: Keep) -> Self {
        Source::Manifests {
            dir: dir.to_owned(),
            keys,
            fingerprint: None,
            next_poll: None,
        }
    }

    /// Watches the API (Pods only when `watch_pods`).
    pub async fn kube(
        kubeconfig: Option<&Path>,
        limits: kube::ApiLimits,
        watch_pods: bool,
        keys: &Keep,
    ) -> Result<Self, Error> {
        let client = kube::client(kubeconfig, limits).await?;
        let health = Arc::new(kube::WatchHealth::default());
        let (rx, kinds, tasks) = kube::start(client, watch_pods, keys, health.clone());
        Ok(Source::Kube {
            rx,
            kinds,
            health,
            gathered: Vec::new(),
            listed: Vec::new(),
            _tasks: Watches(tasks),
        })
    }

    /// The watches' health (none for manifests).
    pub fn health(&self) -> Option<Arc<kube::WatchHealth>> {
        match self {
            Source::Kube { health, .. } => Some(health.clone()),
            Source::Manifests { .. } => None,
        }
    }

    /// The first complete view: the manifests as read, or every change until each kind
    /// has listed once. Cancel-safe.
    pub async fn first(&mut self) -> Result<Vec<Change>, Error> {
        match self {
            Source::Manifests {
                dir,
                keys,
                fingerprint,
                ..
            } => {
                // Taken before reading, so a change made while reading is seen next time.
                *fingerprint = manifests::fingerprint(dir).ok();
                Ok(relists(manifests::load_dir_keeping(dir, keys)?))
            }
            Source::Kube {
                rx,
                kinds,
                gathered,
                listed,
                ..
            } => {
                while listed.len() < kinds.len() {
                    let (_, c) = rx.recv().await.ok_or(Error::Closed)?;
                    if let Change::Relist(k, _) = &c {
                        if !listed.contains(k) {
                            listed.push(*k);
                        }
                    }
                    gathered.push(c);
                }
                Ok(std::mem::take(gathered))
            }
        }
    }

    /// Waits for the next changes. Cancel-safe: the only await is before anything is
    /// taken. `None` when nothing usable changed (a rejected manifest keeps the last good
    /// objects).
    pub async fn next(&mut self) -> Result<Option<Batch>, Error> {
        match self {
            Source::Manifests {
                dir,
                keys,
                fingerprint,
                next_poll,
            } => {
                let at = *next_poll.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                tokio::time::sleep_until(at.into()).await;
                *next_poll = None;
                let now = manifests::fingerprint(dir).ok();
                if now == *fingerprint {
                    return Ok(None);
                }
                let seen = Instant::now();
                *fingerprint = now;
                match manifests::load_dir_keeping(dir, keys) {
                    Ok(v) => Ok(Some(Batch {
                        changes: relists(v),
                        seen,
                    })),
                    Err(e) => {
                        tracing::error!(error = %e, "manifests rejected; the last good records keep serving");
                        Ok(None)
                    }
                }
            }
            Source::Kube { rx, .. } => {
                let (seen, first) = rx.recv().await.ok_or(Error::Closed)?;
                let mut changes = vec![first];
                while changes.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok((_, c)) => changes.push(c),
                        Err(_) => break,
                    }
                }
                Ok(Some(Batch { changes, seen }))
            }
        }
    }
}
