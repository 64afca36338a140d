//! A Kubernetes API server for tests, written for this project: the real kube-rs client
//! talks to it over HTTP. It keeps real list/watch semantics for the four kinds the daemon
//! reads: lists carry a resourceVersion, watches replay history after it and then stream
//! ADDED/MODIFIED/DELETED live, with BOOKMARKs; a resourceVersion older than the retained
//! history gets `410 Gone`; the test can drop every open watch, take the server down and
//! bring it back, and create, change and delete objects.
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// The kinds served, with their list paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Namespace,
    Pod,
}

impl Kind {
    const ALL: [Kind; 4] = [
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

    fn name(self) -> &'static str {
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

type Key = (Kind, String, String);

#[derive(Clone)]
struct Event {
    rv: u64,
    kind: Kind,
    ty: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest: u64,
    down: bool,
    /// Bumped to end every open watch.
    epoch: u64,
    requests: u64,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Event>,
}

pub struct ApiServer {
    shared: Shared,
    pub addr: SocketAddr,
    _runtime: std::thread::JoinHandle<()>,
}

fn key_of(kind: Kind, obj: &Value) -> Key {
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let name = obj["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_owned();
    (kind, ns, name)
}

impl ApiServer {
    /// Listens on 127.0.0.1 (an ephemeral port) inside network namespace `netns`, or the
    /// caller's, and serves from a runtime of its own.
    pub fn start(netns: Option<&str>) -> std::io::Result<Self> {
        let listener = bind_in(netns)?;
        let addr = listener.local_addr()?;
        let (live, _) = broadcast::channel(4096);
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                rv: 100,
                ..Default::default()
            })),
            live,
        };
        let app_state = shared.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let app = Router::new().fallback(handle).with_state(app_state);
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

    fn commit(&self, kind: Kind, ty: &'static str, mut object: Value) {
        let event = {
            let mut s = self.shared.inner.lock().unwrap();
            s.rv += 1;
            let rv = s.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let key = key_of(kind, &object);
            if ty == "DELETED" {
                s.objects.remove(&key);
            } else {
                s.objects.insert(key, object.clone());
            }
            let e = Event {
                rv,
                kind,
                ty,
                object,
            };
            s.history.push(e.clone());
            e
        };
        let _ = self.shared.live.send(event);
    }

    /// Creates or replaces an object (ADDED or MODIFIED, as the store already has it or not).
    pub fn apply(&self, object: Value) {
        let kind = Kind::of(&object);
        let exists = self
            .shared
            .inner
            .lock()
            .unwrap()
            .objects
            .contains_key(&key_of(kind, &object));
        self.commit(kind, if exists { "MODIFIED" } else { "ADDED" }, object);
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let obj = self
            .shared
            .inner
            .lock()
            .unwrap()
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned();
        if let Some(obj) = obj {
            self.commit(kind, "DELETED", obj);
        }
    }

    /// Deletes a namespace and, as the namespace controller does, everything in it.
    pub fn delete_namespace(&self, namespace: &str) {
        let keys: Vec<Key> = self
            .shared
            .inner
            .lock()
            .unwrap()
            .objects
            .keys()
            .filter(|(_, ns, _)| ns == namespace)
            .cloned()
            .collect();
        for (kind, ns, name) in keys {
            self.delete(kind, &ns, &name);
        }
        self.delete(Kind::Namespace, "", namespace);
    }

    /// Forgets history up to now: any watch resuming from an older resourceVersion gets
    /// 410 Gone and must relist.
    pub fn compact(&self) {
        let mut s = self.shared.inner.lock().unwrap();
        s.oldest = s.rv;
        s.history.clear();
    }

    /// Ends every open watch (the connections close); clients resume from where they were.
    pub fn drop_watches(&self) {
        self.shared.inner.lock().unwrap().epoch += 1;
    }

    /// Down: every request fails with 503 and open watches end. Up: serves again.
    pub fn set_down(&self, down: bool) {
        let mut s = self.shared.inner.lock().unwrap();
        s.down = down;
        s.epoch += 1;
    }

    /// Requests served so far (lists and watches).
    pub fn requests(&self) -> u64 {
        self.shared.inner.lock().unwrap().requests
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

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.path() == uri.path()) else {
        return (StatusCode::NOT_FOUND, "not served here").into_response();
    };
    {
        let mut s = shared.inner.lock().unwrap();
        s.requests += 1;
        if s.down {
            return (StatusCode::SERVICE_UNAVAILABLE, "down for the test").into_response();
        }
    }
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        watch(shared, kind, &q)
    } else {
        list(&shared, kind)
    }
}

fn list(shared: &Shared, kind: Kind) -> Response {
    let s = shared.inner.lock().unwrap();
    let items: Vec<&Value> = s
        .objects
        .iter()
        .filter(|((k, _, _), _)| *k == kind)
        .map(|(_, v)| v)
        .collect();
    let body = json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": s.rv.to_string()},
        "items": items,
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn line(v: Value) -> Result<Bytes, Infallible> {
    let mut s = v.to_string();
    s.push('\n');
    Ok(Bytes::from(s))
}

fn watch(shared: Shared, kind: Kind, q: &BTreeMap<String, String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, Infallible>>();
    let mut live = shared.live.subscribe();
    // Subscribed before the snapshot: every event after `snapshot_rv` comes live.
    let (backlog, epoch, gone, snapshot_rv) = {
        let s = shared.inner.lock().unwrap();
        let gone = from < s.oldest;
        let backlog: Vec<Event> = s
            .history
            .iter()
            .filter(|e| e.kind == kind && e.rv > from)
            .cloned()
            .collect();
        (backlog, s.epoch, gone, s.rv)
    };
    tokio::spawn(async move {
        if gone {
            let _ = tx.unbounded_send(line(json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}})));
            return;
        }
        let mut sent = from;
        // Every event up to here is sent or not this watch's kind: what a bookmark may
        // claim. Not the store's version, which a commit raises before its event is live.
        let mut seen = snapshot_rv;
        for e in backlog {
            sent = e.rv;
            if tx
                .unbounded_send(line(json!({"type": e.ty, "object": e.object})))
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick() => {
                    let ep = shared.inner.lock().unwrap().epoch;
                    if ep != epoch {
                        return;
                    }
                    let rv = seen;
                    if bookmarks && rv > sent {
                        let bm = json!({"type": "BOOKMARK", "object": {
                            "kind": kind.name(), "apiVersion": kind.api_version(),
                            "metadata": {"resourceVersion": rv.to_string()}}});
                        if tx.unbounded_send(line(bm)).is_err() {
                            return;
                        }
                        sent = rv;
                    }
                }
                e = live.recv() => match e {
                    Ok(e) if e.kind == kind && e.rv > sent => {
                        seen = seen.max(e.rv);
                        sent = e.rv;
                        if tx.unbounded_send(line(json!({"type": e.ty, "object": e.object}))).is_err() {
                            return;
                        }
                    }
                    Ok(e) => seen = seen.max(e.rv),
                    Err(_) => return,
                },
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(rx))
        .expect("response")
}

/// Object builders, as `kubectl get -o json` would show them (trimmed).
pub mod obj {
    use serde_json::{json, Value};

    pub fn namespace(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    }

    pub fn service(ns: &str, name: &str, cluster_ips: &[&str], ports: &[(&str, u16)]) -> Value {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
            .collect();
        let ip = cluster_ips.first().copied().unwrap_or("None");
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
               "spec": {"clusterIP": ip, "clusterIPs": if cluster_ips.is_empty() { json!(["None"]) } else { json!(cluster_ips) }, "ports": ports}})
    }

    /// An EndpointSlice of `service` with (address, hostname, ready) endpoints.
    pub fn slice(
        ns: &str,
        name: &str,
        service: &str,
        endpoints: &[(&str, Option<&str>, bool)],
        ports: &[(&str, u16)],
    ) -> Value {
        let eps: Vec<Value> = endpoints
            .iter()
            .map(|(a, h, r)| {
                let mut e = json!({"addresses": [a], "conditions": {"ready": r}});
                if let Some(h) = h {
                    e["hostname"] = json!(h);
                }
                e
            })
            .collect();
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
            .collect();
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
               "addressType": "IPv4", "endpoints": eps, "ports": ports})
    }
}
