//! A Kubernetes API server for tests, written for this project: the real kube-rs client
//! talks to it over HTTP, and it behaves as kube-apiserver does wherever a client can tell:
//! - lists page (`limit`, `continue`) from a snapshot at the first page's version; a token
//!   expires after etcd compaction or a time limit (410 Expired); `resourceVersion=0` is
//!   served whole from the cache;
//! - each kind has a watch cache with a bounded window: a watch from a version older than
//!   the window gets 410 Gone; bookmarks come at an interval, watches end at
//!   `timeoutSeconds` (capped), and a watcher that does not keep up is closed;
//! - label and field selectors (`metadata.*`, Pod `spec.nodeName`, `status.podIP`,
//!   `status.phase`) on lists and watches, objects entering and leaving a watch's selection
//!   as ADDED and DELETED; 400 for a field it does not select on;
//! - every object gets a uid, creationTimestamp, managedFields and, with `generateName`, a
//!   generated name; Pods delete gracefully and Namespaces pass through Terminating;
//! - faults act at once: watches dropped, the server down or restarted, per-kind status
//!   codes (403, 429, 500); every request is logged for the tests to assert on.
mod log;
pub mod obj;
mod select;
mod serve;
mod store;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use axum::Router;
pub use log::{Outcome, Request, Verb, WatchEnd};
use serde_json::{json, Value};
use store::{Event, Store};
use tokio::sync::{broadcast, watch};

/// The kinds served, with their list paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Namespace,
    Pod,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::Pod,
    ];

    fn path(self) -> &'static str {
        match self {
            Kind::Service => "/api/v1/services",
            Kind::EndpointSlice => "/apis/discovery.k8s.io/v1/endpointslices",
            Kind::Namespace => "/api/v1/namespaces",
            Kind::Pod => "/api/v1/pods",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    fn of(obj: &Value) -> Kind {
        match obj["kind"].as_str() {
            Some("Service") => Kind::Service,
            Some("EndpointSlice") => Kind::EndpointSlice,
            Some("Namespace") => Kind::Namespace,
            Some("Pod") => Kind::Pod,
            other => panic!("test API server does not serve kind {other:?}"),
        }
    }
}

/// How the server behaves; the defaults are kube-apiserver's.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long the watch cache keeps events once it holds more than the minimum (75 s).
    pub history_window: Duration,
    /// Events a kind's cache keeps however old (a real cache keeps its ring's worth: 100).
    pub history_min_events: usize,
    /// Events a kind's cache keeps at most (the real upper bound, 100 × 1024).
    pub history_max_events: usize,
    /// Bookmark period for watches that allow them (about a minute); `None`: never.
    pub bookmark_interval: Option<Duration>,
    /// The longest a watch runs whatever `timeoutSeconds` says (`--min-request-timeout`).
    pub watch_timeout_cap: Duration,
    /// Events buffered for one watcher...
    pub watch_buffer: usize,
    /// ...and how long a full buffer may stay full before the watcher is closed.
    pub slow_watcher_patience: Duration,
    /// How long a continue token lives without compaction (etcd compacts every 5 min).
    pub continue_ttl: Duration,
    /// A delay before each list page is answered.
    pub page_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            history_window: Duration::from_secs(75),
            history_min_events: 100,
            history_max_events: 100 * 1024,
            bookmark_interval: Some(Duration::from_secs(60)),
            watch_timeout_cap: Duration::from_secs(1800),
            watch_buffer: 100,
            slow_watcher_patience: Duration::from_secs(1),
            continue_ttl: Duration::from_secs(300),
            page_delay: Duration::ZERO,
        }
    }
}

/// Counters bumped to end open watches: all of them, or one kind's.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Drops {
    all: u64,
    kind: [u64; 4],
}

/// A status code answered to a kind's requests: the next `times`, or until cleared.
struct Fault {
    kind: Option<Kind>,
    status: u16,
    times: Option<u32>,
}

struct Shared {
    store: Mutex<Store>,
    options: Mutex<Options>,
    live: broadcast::Sender<Arc<Event>>,
    drops: watch::Sender<Drops>,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<Request>>,
    down: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not wedge the server for the other tests' asserts.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn options(&self) -> Options {
        lock(&self.options).clone()
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    fn record(&self, r: Request) -> usize {
        let mut log = lock(&self.log);
        log.push(r);
        log.len() - 1
    }

    /// Counts what a watch sent, live, so tests can wait on it.
    fn watch_sent(&self, entry: usize, events: usize, bookmarks: usize) {
        if let Some(r) = lock(&self.log).get_mut(entry) {
            r.outcome = Outcome::Watching { events, bookmarks };
        }
    }

    fn finish_watch(&self, entry: usize, events: usize, bookmarks: usize, end: WatchEnd) {
        if let Some(r) = lock(&self.log).get_mut(entry) {
            r.outcome = Outcome::Watched {
                events,
                bookmarks,
                end,
            };
        }
    }

    fn take_fault(&self, kind: Kind) -> Option<u16> {
        let mut faults = lock(&self.faults);
        let i = faults
            .iter()
            .position(|f| f.kind.is_none_or(|k| k == kind))?;
        let status = faults[i].status;
        if let Some(n) = faults[i].times.as_mut() {
            *n -= 1;
            if *n == 0 {
                faults.remove(i);
            }
        }
        Some(status)
    }

    fn drop_watches(&self, kind: Option<Kind>) {
        self.drops.send_modify(|d| match kind {
            None => d.all += 1,
            Some(k) => d.kind[k as usize] += 1,
        });
    }

    /// Writes and publishes under one lock, so a watch starting meanwhile sees each event
    /// exactly once (in its backlog or live).
    fn commit(&self, kind: Kind, delete: bool, object: Value) -> Option<Arc<Value>> {
        let opts = self.options();
        let mut store = self.store();
        let e = store.commit(kind, delete, object, &opts)?;
        let object = e.object.clone();
        let _ = self.live.send(e);
        Some(object)
    }

    fn delete(&self, kind: Kind, ns: &str, name: &str) -> bool {
        let obj = json!({"metadata": {"namespace": ns, "name": name}});
        self.commit(kind, true, obj).is_some()
    }
}

pub struct ApiServer {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
    _runtime: std::thread::JoinHandle<()>,
}

impl ApiServer {
    /// Listens on 127.0.0.1 (an ephemeral port) inside network namespace `netns`, or the
    /// caller's, and serves from a runtime of its own.
    pub fn start(netns: Option<&str>) -> std::io::Result<Self> {
        Self::start_with(netns, Options::default())
    }

    pub fn start_with(netns: Option<&str>, options: Options) -> std::io::Result<Self> {
        let listener = bind_in(netns)?;
        let addr = listener.local_addr()?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(seed)),
            options: Mutex::new(options),
            live: broadcast::channel(1 << 16).0,
            drops: watch::channel(Drops::default()).0,
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
        });
        let app_state = shared.clone();
        let handle = std::thread::spawn(move || {
            // Requests are served side by side, as the real server serves them: a daemon
            // lists Services and EndpointSlices at once, and one worker would build one
            // list's body only after the other's (seconds at 100k Services).
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let app = Router::new().fallback(serve::handle).with_state(app_state);
                let _ = axum::serve(listener, app).await;
            });
        });
        Ok(Self {
            shared,
            addr,
            _runtime: handle,
        })
    }

    /// A kubeconfig that points kube-rs here, without auth.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\n",
            self.addr
        )
    }

    /// Changes the server's behaviour from now on (open watches keep their settings).
    pub fn configure(&self, f: impl FnOnce(&mut Options)) {
        f(&mut lock(&self.shared.options));
    }

    /// Creates or replaces an object (ADDED or MODIFIED, as the store already has it or
    /// not); returns it as stored (name generated, uid, resourceVersion).
    pub fn apply(&self, object: Value) -> Value {
        let kind = Kind::of(&object);
        self.shared
            .commit(kind, false, object)
            .map(|o| (*o).clone())
            .unwrap_or_default()
    }

    /// Deletes at once (what a Pod's deletion becomes once its grace period is over).
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.shared.delete(kind, namespace, name)
    }

    /// The current object, as a GET would return it.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .get(kind, namespace, name)
            .map(|o| (*o).clone())
    }

    /// Every object of every kind, as a list would return them.
    pub fn objects(&self) -> Vec<Value> {
        let store = self.shared.store();
        Kind::ALL
            .iter()
            .flat_map(|k| store.all(*k).map(|o| (**o).clone()).collect::<Vec<_>>())
            .collect()
    }

    /// Graceful Pod deletion: `deletionTimestamp` is set (MODIFIED) and the Pod goes
    /// (DELETED) once `grace` has passed, as the kubelet confirms it.
    pub fn delete_pod(&self, namespace: &str, name: &str, grace: Duration) {
        let Some(mut pod) = self.get(Kind::Pod, namespace, name) else {
            return;
        };
        if grace.is_zero() {
            self.delete(Kind::Pod, namespace, name);
            return;
        }
        pod["metadata"]["deletionTimestamp"] = json!(store::rfc3339_in(grace));
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace.as_secs());
        let uid = pod["metadata"]["uid"].clone();
        self.shared.commit(Kind::Pod, false, pod);
        let shared = self.shared.clone();
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            let same = shared
                .store()
                .get(Kind::Pod, &ns, &name)
                .is_some_and(|p| p["metadata"]["uid"] == uid);
            if same {
                shared.delete(Kind::Pod, &ns, &name);
            }
        });
    }

    /// The binding subresource: the scheduler puts a Pod on `node`.
    pub fn bind(&self, namespace: &str, pod: &str, node: &str) {
        if let Some(mut p) = self.get(Kind::Pod, namespace, pod) {
            p["spec"]["nodeName"] = json!(node);
            self.shared.commit(Kind::Pod, false, p);
        }
    }

    /// Deletes a namespace as the namespace controller does: Terminating first, then
    /// everything in it, then the namespace itself.
    pub fn delete_namespace(&self, namespace: &str) {
        let Some(mut ns) = self.get(Kind::Namespace, "", namespace) else {
            return;
        };
        ns["metadata"]["deletionTimestamp"] = json!(store::rfc3339_in(Duration::ZERO));
        ns["status"] = json!({"phase": "Terminating"});
        self.shared.commit(Kind::Namespace, false, ns);
        let inside: Vec<(Kind, String)> = {
            let store = self.shared.store();
            Kind::ALL
                .iter()
                .flat_map(|k| {
                    store
                        .in_namespace(*k, namespace)
                        .map(|o| (*k, o["metadata"]["name"].as_str().unwrap_or("").to_owned()))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for (kind, name) in inside {
            self.delete(kind, namespace, &name);
        }
        self.delete(Kind::Namespace, "", namespace);
    }

    /// The EndpointSlice controller's reconcile for one Service: its endpoints in slices of
    /// at most 100, one address family each, generated names, updated in place where a
    /// slice exists, extra slices deleted. Returns the slices' names.
    pub fn set_endpoints(
        &self,
        namespace: &str,
        service: &str,
        endpoints: &[obj::Endpoint],
        ports: &[(&str, u16)],
    ) -> Vec<String> {
        let (existing, owner) = {
            let store = self.shared.store();
            let existing: Vec<Value> = store
                .in_namespace(Kind::EndpointSlice, namespace)
                .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service)
                .map(|s| (**s).clone())
                .collect();
            let owner = store
                .get(Kind::Service, namespace, service)
                .map(|s| s["metadata"]["uid"].clone());
            (existing, owner)
        };
        let mut names = Vec::new();
        for family in ["IPv4", "IPv6"] {
            let mut old = existing
                .iter()
                .filter(|s| s["addressType"] == family)
                .cloned();
            for mut want in obj::slices(namespace, service, endpoints, ports, family) {
                if let Some(uid) = &owner {
                    want["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1",
                        "kind": "Service", "name": service, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true}]);
                }
                if let Some(o) = old.next() {
                    want["metadata"]["name"] = o["metadata"]["name"].clone();
                    let same = o["endpoints"] == want["endpoints"] && o["ports"] == want["ports"];
                    if same {
                        names.push(o["metadata"]["name"].as_str().unwrap_or("").to_owned());
                        continue;
                    }
                }
                let stored = self.apply(want);
                names.push(stored["metadata"]["name"].as_str().unwrap_or("").to_owned());
            }
            for o in old {
                let name = o["metadata"]["name"].as_str().unwrap_or("");
                self.delete(Kind::EndpointSlice, namespace, name);
            }
        }
        names
    }

    /// etcd compaction after other writes: lists paged before now cannot continue (410
    /// Expired on their next page).
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// The API server restarts: every watch ends, and the new watch caches begin at the
    /// current version after the writes (Leases, Events) a cluster makes meanwhile, so every
    /// watch resuming from before gets 410 Gone and relists.
    pub fn restart(&self) {
        self.shared.store().restart();
        self.shared.drop_watches(None);
    }

    /// Ends every open watch (the connections close); clients resume from where they were.
    pub fn drop_watches(&self) {
        self.shared.drop_watches(None);
    }

    /// Ends the open watches of one kind.
    pub fn drop_watches_of(&self, kind: Kind) {
        self.shared.drop_watches(Some(kind));
    }

    /// Down: every request fails with 503 and open watches end at once. Up: serves again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.shared.drop_watches(None);
        }
    }

    /// Answers `status` (403, 429 with Retry-After, 500...) to requests for `kind` (every
    /// kind with `None`): the next `times` of them, or all until `clear_faults`.
    pub fn fail(&self, kind: Option<Kind>, status: u16, times: Option<u32>) {
        lock(&self.shared.faults).push(Fault {
            kind,
            status,
            times,
        });
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Requests served so far (lists and watches, refused ones included).
    pub fn requests(&self) -> u64 {
        lock(&self.shared.log).len() as u64
    }

    /// The request log so far.
    pub fn log(&self) -> Vec<Request> {
        lock(&self.shared.log).clone()
    }

    /// Polls the log until `pred` holds (true) or `within` passes (false).
    pub fn wait_log(&self, within: Duration, pred: impl Fn(&[Request]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if pred(&lock(&self.shared.log)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn bind_in(netns: Option<&str>) -> std::io::Result<std::net::TcpListener> {
    let Some(ns) = netns else {
        return std::net::TcpListener::bind("127.0.0.1:0");
    };
    let path = format!("/run/netns/{ns}");
    // A socket belongs to the namespace it was created in: create it on a thread that
    // joined the namespace, then serve it from anywhere.
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path)?;
        // SAFETY: a valid namespace fd; only this short-lived thread changes namespace.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::net::TcpListener::bind("127.0.0.1:0")
    })
    .join()
    .map_err(|_| std::io::Error::other("bind thread panicked"))?
}
