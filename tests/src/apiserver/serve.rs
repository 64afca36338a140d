//! The HTTP side: paths to kinds, lists paged from snapshots, watches with selectors,
//! bookmarks, timeouts and a bounded buffer, and the faults the tests inject.
use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::{
    log::{Outcome, Request, Verb, WatchEnd},
    select::Filter,
    store::{Event, EventType, Start},
    Kind, Shared,
};

/// `/api/v1/pods` or `/api/v1/namespaces/shop/pods` (and the discovery group's slices).
fn route(path: &str) -> Option<(Kind, Option<String>)> {
    if let Some(k) = Kind::ALL.into_iter().find(|k| k.path() == path) {
        return Some((k, None));
    }
    let (prefix, rest) = if let Some(r) = path.strip_prefix("/api/v1/namespaces/") {
        ("/api/v1/", r)
    } else {
        (
            "/apis/discovery.k8s.io/v1/",
            path.strip_prefix("/apis/discovery.k8s.io/v1/namespaces/")?,
        )
    };
    let (ns, resource) = rest.split_once('/')?;
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.path() == format!("{prefix}{resource}") && *k != Kind::Namespace)?;
    Some((kind, Some(ns.to_owned())))
}

/// A `Status` object, the body every API error carries.
fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    let mut r = (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response();
    if code == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    r
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        410 => "Expired",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    }
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let Some((kind, namespace)) = route(uri.path()) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "not served here".into());
    };
    let verb = if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        Verb::Watch
    } else {
        Verb::List
    };
    let refuse = |code: u16, message: String| {
        shared.record(Request {
            kind,
            verb,
            query: query.clone(),
            status: code,
            outcome: Outcome::Refused,
        });
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        status(code, reason(code.as_u16()), message)
    };
    if shared.is_down() {
        return refuse(503, "down for the test".into());
    }
    if let Some(code) = shared.take_fault(kind) {
        return refuse(code, format!("injected {code} on {}", kind.name()));
    }
    let filter = match Filter::parse(
        kind,
        namespace,
        query.get("labelSelector").map(String::as_str),
        query.get("fieldSelector").map(String::as_str),
    ) {
        Ok(f) => f,
        Err(e) => return refuse(400, e.0),
    };
    match verb {
        Verb::Watch => watch(shared, kind, filter, query),
        Verb::List => list(shared, kind, filter, query).await,
    }
}

/// `{rv}.{snapshot}.{offset}`: opaque to clients, like the real server's base64 tokens.
fn parse_token(token: &str) -> Option<(u64, u64, usize)> {
    let mut parts = token.split('.');
    let rv = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some((rv, id, offset))
}

/// A list body, written item by item from the shared objects.
fn list_body(
    kind: Kind,
    rv: u64,
    cont: Option<String>,
    remaining: usize,
    items: &[Arc<Value>],
) -> String {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
        meta["remainingItemCount"] = json!(remaining);
    }
    let mut out = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
        kind.name(),
        kind.api_version()
    );
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item.to_string());
    }
    out.push_str("]}");
    out
}

async fn list(
    shared: Arc<Shared>,
    kind: Kind,
    filter: Filter,
    query: BTreeMap<String, String>,
) -> Response {
    let opts = shared.options();
    if !opts.page_delay.is_zero() {
        tokio::time::sleep(opts.page_delay).await;
    }
    let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let any = query.get("resourceVersion").map(String::as_str) == Some("0");
    let log = |status: u16, outcome: Outcome| {
        shared.record(Request {
            kind,
            verb: Verb::List,
            query: query.clone(),
            status,
            outcome,
        })
    };
    let (rv, id, items, offset) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let found = parse_token(token).and_then(|(_, id, offset)| {
                let (rv, items) = shared.store().snapshot_for(id, &opts)?;
                Some((rv, id, items, offset))
            });
            let Some(found) = found else {
                log(410, Outcome::Gone);
                return status(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter."
                        .into(),
                );
            };
            found
        }
        None => {
            let mut store = shared.store();
            let items: Vec<Arc<Value>> = store
                .all(kind)
                .filter(|o| filter.matches(o))
                .cloned()
                .collect();
            let rv = store.rv;
            // `resourceVersion=0` is served whole from the watch cache (no paging), as the
            // real server does; anything else pages from a snapshot at this version.
            if any || limit == 0 || items.len() <= limit {
                drop(store);
                log(
                    200,
                    Outcome::Listed {
                        items: items.len(),
                        more: false,
                    },
                );
                let body = list_body(kind, rv, None, 0, &items);
                return ([("content-type", "application/json")], body).into_response();
            }
            let items = Arc::new(items);
            let id = store.snapshot(items.clone(), &opts);
            (rv, id, items, 0)
        }
    };
    let end = if limit == 0 {
        items.len()
    } else {
        offset.saturating_add(limit).min(items.len())
    };
    let chunk = items.get(offset.min(end)..end).unwrap_or_default();
    let more = end < items.len();
    let token = more.then(|| format!("{rv}.{id}.{end}"));
    log(
        200,
        Outcome::Listed {
            items: chunk.len(),
            more,
        },
    );
    let body = list_body(kind, rv, token, items.len() - end, chunk);
    ([("content-type", "application/json")], body).into_response()
}

/// One watch event line, written from the shared object.
fn line(ty: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{ty}\",\"object\":{object}}}\n"))
}

/// What a filtered watch sends for `e`, as the watch cache does: an object that starts
/// matching arrives as ADDED, one that stops matching as DELETED (its last matching state
/// at the new version), others not at all.
fn view(e: &Event, filter: &Filter) -> Option<Bytes> {
    let now = filter.matches(&e.object);
    let before = e.prev.as_ref().is_some_and(|p| filter.matches(p));
    match (e.ty, before, now) {
        (EventType::Added, _, true) => Some(line("ADDED", &e.object)),
        (EventType::Deleted, _, true) => Some(line("DELETED", &e.object)),
        (EventType::Modified, true, true) => Some(line("MODIFIED", &e.object)),
        (EventType::Modified, false, true) => Some(line("ADDED", &e.object)),
        (EventType::Modified, true, false) => {
            let mut last = e.prev.as_deref().cloned().unwrap_or_default();
            last["metadata"]["resourceVersion"] = json!(e.rv.to_string());
            Some(line("DELETED", &last))
        }
        _ => None,
    }
}

/// One open watch: where it sends, what it has sent, and its entry in the log.
struct Stream {
    tx: mpsc::Sender<Bytes>,
    entry: usize,
    events: usize,
    bookmarks: usize,
}

impl Stream {
    /// Sends at the client's pace (the initial events), or within the server's patience
    /// (live events: a watcher whose buffer stays full is closed).
    async fn send(&mut self, bytes: Bytes, patience: Option<Duration>) -> Result<(), WatchEnd> {
        let sent = match patience {
            None => self.tx.send(bytes).await.map_err(|_| WatchEnd::ClientGone),
            Some(p) => match tokio::time::timeout(p, self.tx.send(bytes)).await {
                Ok(r) => r.map_err(|_| WatchEnd::ClientGone),
                Err(_) => Err(WatchEnd::Slow),
            },
        };
        sent
    }
}

fn watch(
    shared: Arc<Shared>,
    kind: Kind,
    filter: Filter,
    query: BTreeMap<String, String>,
) -> Response {
    let opts = shared.options();
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(opts.watch_timeout_cap)
        .min(opts.watch_timeout_cap);
    let (tx, mut rx) = mpsc::channel::<Bytes>(opts.watch_buffer.max(1));
    let mut drops = shared.drops.subscribe();
    let dropped_at = *drops.borrow_and_update();
    // Subscribed under the store's lock, where commits publish: every event after the
    // start is live, none twice.
    let (start, mut live, snapshot_rv) = {
        let mut store = shared.store();
        let start = store.start_watch(kind, from, &opts);
        (start, shared.live.subscribe(), store.rv)
    };
    let gone = start.is_err();
    let entry = shared.record(Request {
        kind,
        verb: Verb::Watch,
        query,
        status: if gone { 410 } else { 200 },
        outcome: if gone {
            Outcome::Gone
        } else {
            Outcome::Watching {
                events: 0,
                bookmarks: 0,
            }
        },
    });
    let mut stream = Stream {
        tx,
        entry,
        events: 0,
        bookmarks: 0,
    };
    tokio::spawn(async move {
        let Ok(start) = start else {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("too old resource version: {from}"),
                "reason": "Expired", "code": 410});
            let _ = stream.tx.send(line("ERROR", &status)).await;
            return;
        };
        let end = async {
            // Every event up to `seen` is in the start or handled live: what a bookmark may
            // claim (not the store's version, which a commit raises before its event is out).
            // `told` is the version the client last heard of.
            let mut seen = snapshot_rv;
            let mut told = from;
            let initial: Vec<Bytes> = match &start {
                Start::Current(objects) => objects
                    .iter()
                    .filter(|o| filter.matches(o))
                    .map(|o| line("ADDED", o))
                    .collect(),
                Start::After(events) => events
                    .iter()
                    .filter_map(|e| {
                        let b = view(e, &filter)?;
                        told = e.rv;
                        Some(b)
                    })
                    .collect(),
            };
            drop(start);
            for bytes in initial {
                stream.send(bytes, None).await?;
                stream.events += 1;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let mut tick = opts
                .bookmark_interval
                .map(|i| tokio::time::interval_at(tokio::time::Instant::now() + i, i));
            loop {
                tokio::select! {
                    // A drop wins over events already waiting: nothing committed after the
                    // test dropped (or restarted) reaches the old stream.
                    biased;
                    _ = tokio::time::sleep_until(deadline) => return Err(WatchEnd::Timeout),
                    changed = drops.changed() => {
                        let now = *drops.borrow_and_update();
                        if changed.is_err() || now.all != dropped_at.all || now.kind[kind as usize] != dropped_at.kind[kind as usize] {
                            return Err(WatchEnd::Dropped);
                        }
                    }
                    _ = async { tick.as_mut()?.tick().await; Some(()) }, if tick.is_some() && bookmarks => {
                        if seen > told {
                            let bm = json!({"kind": kind.name(), "apiVersion": kind.api_version(),
                                "metadata": {"resourceVersion": seen.to_string()}});
                            stream.send(line("BOOKMARK", &bm), Some(opts.slow_watcher_patience)).await?;
                            stream.bookmarks += 1;
                            shared.watch_sent(stream.entry, stream.events, stream.bookmarks);
                            told = seen;
                        }
                    }
                    e = live.recv() => match e {
                        Ok(e) => {
                            let fresh = e.rv > seen;
                            seen = seen.max(e.rv);
                            if fresh && e.kind == kind {
                                if let Some(bytes) = view(&e, &filter) {
                                    told = e.rv;
                                    stream.send(bytes, Some(opts.slow_watcher_patience)).await?;
                                    stream.events += 1;
                                    shared.watch_sent(stream.entry, stream.events, stream.bookmarks);
                                }
                            }
                        }
                        // The dispatcher moved on without this watch: it is too slow.
                        Err(RecvError::Lagged(_)) => return Err(WatchEnd::Slow),
                        Err(RecvError::Closed) => return Err(WatchEnd::Dropped),
                    },
                }
            }
        };
        let end: Result<(), WatchEnd> = end.await;
        let end = end.err().unwrap_or(WatchEnd::ClientGone);
        shared.finish_watch(stream.entry, stream.events, stream.bookmarks, end);
    });
    let body =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cluster_wide_and_namespaced_paths() {
        assert_eq!(route("/api/v1/pods"), Some((Kind::Pod, None)));
        assert_eq!(
            route("/api/v1/namespaces/shop/services"),
            Some((Kind::Service, Some("shop".into())))
        );
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"),
            Some((Kind::EndpointSlice, Some("shop".into())))
        );
        assert_eq!(route("/api/v1/namespaces"), Some((Kind::Namespace, None)));
        assert_eq!(route("/api/v1/namespaces/shop/configmaps"), None);
    }

    #[test]
    fn a_selector_watch_sees_objects_enter_and_leave() {
        let f = Filter::parse(Kind::Pod, None, None, Some("spec.nodeName=a")).unwrap();
        let pod = |node: &str| {
            Arc::new(
                json!({"metadata": {"name": "p", "resourceVersion": "1"}, "spec": {"nodeName": node}}),
            )
        };
        let ev = |prev: Option<Arc<Value>>, object| {
            Event::for_test(7, Kind::Pod, EventType::Modified, object, prev)
        };
        let s = |b: Option<Bytes>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        let entered = s(view(&ev(Some(pod("b")), pod("a")), &f)).unwrap();
        assert!(entered.starts_with("{\"type\":\"ADDED\""), "{entered}");
        let left = s(view(&ev(Some(pod("a")), pod("b")), &f)).unwrap();
        assert!(left.starts_with("{\"type\":\"DELETED\""), "{left}");
        assert!(
            left.contains("\"nodeName\":\"a\"") && left.contains("\"resourceVersion\":\"7\""),
            "{left}"
        );
        assert_eq!(s(view(&ev(Some(pod("b")), pod("c")), &f)), None);
    }
}
