//! The request log the tests assert on: every list and watch, what it asked and how it
//! ended.
use std::collections::BTreeMap;

use super::Kind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    List,
    Watch,
}

/// Why a watch stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// Its `timeoutSeconds` (or the server's cap) ran out: the client resumes.
    Timeout,
    /// The test dropped watches, took the server down or restarted it.
    Dropped,
    /// Its buffer stayed full: the server forced it closed, as the watch cache does with
    /// an unresponsive watcher.
    Slow,
    /// The client hung up.
    ClientGone,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A list page: how many items, and whether a continue token followed.
    Listed { items: usize, more: bool },
    /// 410 Gone: a watch from a version older than the cache's window, or an expired
    /// continue token (the real server sends the former as an ERROR event in a 200 stream).
    Gone,
    /// Refused with the logged status: a fault, the server down, a bad selector.
    Refused,
    /// A watch still open, with what it has sent so far.
    Watching { events: usize, bookmarks: usize },
    Watched {
        events: usize,
        bookmarks: usize,
        end: WatchEnd,
    },
}

#[derive(Clone, Debug)]
pub struct Request {
    pub kind: Kind,
    pub verb: Verb,
    pub query: BTreeMap<String, String>,
    pub status: u16,
    pub outcome: Outcome,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// A list page after the first (it carries a continue token).
    pub fn continued(&self) -> bool {
        self.param("continue").is_some_and(|c| !c.is_empty())
    }

    pub fn is(&self, kind: Kind, verb: Verb) -> bool {
        self.kind == kind && self.verb == verb
    }
}
