//! A value the listeners read on every query and a writer replaces whole.
use std::sync::{Arc, RwLock};

/// A value the listeners read on every query and a writer replaces whole (a new zone, a
/// reloaded resolver): readers hold the old one until they are done with it.
pub struct Swap<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Swap<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }
    pub fn get(&self) -> Arc<T> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
    pub fn set(&self, value: T) {
        drop(self.replace(value));
    }

    /// Swaps in `value` and hands back the old one, to drop outside the lock (and, for a
    /// zone, after the change is programmed: freeing what the old snapshot alone holds
    /// is not on a change's path).
    pub fn replace(&self, value: T) -> Arc<T> {
        let new = Arc::new(value);
        match self.0.write() {
            Ok(mut g) => std::mem::replace(&mut *g, new),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
        }
    }
}
