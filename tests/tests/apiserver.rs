//! The test API server against the real kube-rs client: each behaviour the daemon's tests
//! rely on (paging, expiry, the watch cache's window, bookmarks, timeouts, slow watchers,
//! selectors, faults, server-owned metadata) shown from the client's side. No daemon and
//! no root: the server listens on the test process's loopback.
use std::{
    future::Future,
    io::Write as _,
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    api::{ListParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{reflector, watcher, WatchStreamExt},
    Api, Client, Config, ResourceExt,
};
use serde_json::json;
use tests::apiserver::{
    obj::{self, Endpoint},
    ApiServer, Kind, Options, Outcome, Request, Verb, WatchEnd,
};

const SOON: Duration = Duration::from_secs(10);

async fn client(api: &ApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&api.kubeconfig()).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// Polls `f` until it holds, failing the test after `within`.
async fn until<F: Future<Output = bool>>(within: Duration, what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_has(api: &ApiServer, what: &str, pred: impl Fn(&[Request]) -> bool) {
    assert!(api.wait_log(SOON, pred), "{what}; log: {:#?}", api.log());
}

fn services(api: &ApiServer, n: usize) {
    api.apply(obj::namespace("bulk"));
    for i in 0..n {
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        api.apply(obj::service(
            "bulk",
            &format!("s{i}"),
            &[&ip],
            &[("http", 80)],
        ));
    }
}

/// A watch of every object of `api`'s kind from the current version (a list's).
async fn watch_from_now<K>(
    api: &Api<K>,
) -> futures::stream::BoxStream<'static, kube::Result<WatchEvent<K>>>
where
    K: Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed()
}

fn api_status(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("not an API status: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_from_one_snapshot_and_tokens_expire() {
    let api = ApiServer::start(None).unwrap();
    services(&api, 1200);
    let svc: Api<Service> = Api::all(client(&api).await);

    let first = svc.list(&ListParams::default().limit(500)).await.unwrap();
    assert_eq!(first.items.len(), 500);
    assert_eq!(first.metadata.remaining_item_count, Some(700));
    let token = first.metadata.continue_.clone().expect("a continue token");
    // A write between pages is not in this list: every page is the first page's snapshot.
    api.apply(obj::service("bulk", "late", &["10.96.200.1"], &[]));
    let mut names: Vec<String> = first.items.iter().map(|s| s.name_any()).collect();
    let mut token = Some(token);
    let mut pages = 1;
    while let Some(t) = token {
        let page = svc
            .list(&ListParams::default().limit(500).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version,
            first.metadata.resource_version
        );
        names.extend(page.items.iter().map(|s| s.name_any()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        pages += 1;
    }
    assert_eq!((pages, names.len()), (3, 1200));
    assert!(!names.contains(&"late".to_owned()));

    // Compaction expires a list in progress: 410 Expired on its next page.
    let first = svc.list(&ListParams::default().limit(500)).await.unwrap();
    api.compact();
    let t = first.metadata.continue_.unwrap();
    let err = svc
        .list(&ListParams::default().limit(500).continue_token(&t))
        .await
        .unwrap_err();
    assert_eq!(api_status(err), (410, "Expired".into()));

    // `resourceVersion=0` comes whole from the cache, limit or not, never 410.
    api.restart();
    // (kube-rs leaves `resourceVersion=0` out when a limit is set.)
    let any = svc.list(&ListParams::default().match_any()).await.unwrap();
    assert_eq!(any.items.len(), 1201);
    assert!(any.metadata.continue_.is_none_or(|c| c.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_relists_from_scratch_when_a_token_expires_between_pages() {
    let api = ApiServer::start(None).unwrap();
    services(&api, 1200);
    api.configure(|o| o.page_delay = Duration::from_millis(200));
    let (store, writer) = reflector::store::<Service>();
    let stream = watcher(Api::all(client(&api).await), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    // The first page is out: expire its token before the second is asked for.
    let first_page = |log: &[Request]| {
        log.iter().any(|r| {
            r.is(Kind::Service, Verb::List)
                && matches!(r.outcome, Outcome::Listed { more: true, .. })
        })
    };
    log_has(&api, "a first page", first_page);
    api.compact();
    api.apply(obj::service("bulk", "late", &["10.96.200.1"], &[]));
    tokio::time::timeout(SOON, store.wait_until_ready())
        .await
        .expect("synced")
        .unwrap();
    until(SOON, "the store to hold every Service", || {
        let n = store.state().len();
        async move { n == 1201 }
    })
    .await;
    let lists: Vec<Request> = api
        .log()
        .into_iter()
        .filter(|r| r.is(Kind::Service, Verb::List))
        .collect();
    let expired = lists
        .iter()
        .position(|r| r.outcome == Outcome::Gone && r.continued())
        .expect("a 410 for the expired token");
    let fresh = &lists[expired + 1..];
    assert!(!fresh[0].continued(), "relisted from the first page");
    assert_eq!(fresh.len(), 3, "a whole new list of 3 pages: {fresh:#?}");
    task.abort();
}

/// A node agent's Pod watch (`spec.nodeName`) sees none of the other nodes' churn: only
/// bookmarks move its version on. Without them it falls out of the window and must relist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_keep_a_selective_watch_inside_the_window() {
    for bookmarks in [false, true] {
        let api = ApiServer::start_with(
            None,
            Options {
                history_window: Duration::from_millis(300),
                history_min_events: 0,
                bookmark_interval: bookmarks.then_some(Duration::from_millis(100)),
                ..Options::default()
            },
        )
        .unwrap();
        api.apply(obj::namespace("shop"));
        api.apply(obj::pod("shop", "mine", &["10.1.0.1"], Some("node-a")));
        let pods: Api<Pod> = Api::all(client(&api).await);
        let cfg = watcher::Config::default().fields("spec.nodeName=node-a");
        let (store, writer) = reflector::store::<Pod>();
        let task = tokio::spawn(
            watcher(pods, cfg)
                .default_backoff()
                .reflect(writer)
                .applied_objects()
                .for_each(|_| async {}),
        );
        store.wait_until_ready().await.unwrap();
        let watching = |log: &[Request]| log.iter().any(|r| r.is(Kind::Pod, Verb::Watch));
        log_has(&api, "a Pod watch", watching);
        for i in 0..50 {
            api.apply(obj::pod(
                "shop",
                &format!("other-{i}"),
                &["10.1.1.1"],
                Some("node-b"),
            ));
        }
        // Past the window; with bookmarks, one sent after the churn.
        let churned = api.log().len();
        tokio::time::sleep(Duration::from_millis(400)).await;
        if bookmarks {
            log_has(&api, "a bookmark after the churn", |log| {
                log.iter().any(|r| {
                    r.is(Kind::Pod, Verb::Watch)
                        && matches!(r.outcome, Outcome::Watching { bookmarks: b, .. } if b >= 1)
                })
            });
        }
        // One more write so the window surely evicts the churn, then the connection drops.
        api.apply(obj::pod(
            "shop",
            "other-last",
            &["10.1.1.2"],
            Some("node-b"),
        ));
        api.drop_watches();
        log_has(&api, "the watch resumed or relisted", |log| {
            log[churned..].iter().any(|r| {
                r.is(Kind::Pod, Verb::Watch)
                    && r.status == 200
                    && r.param("resourceVersion") != Some("0")
                    && !matches!(
                        r.outcome,
                        Outcome::Watched {
                            end: WatchEnd::Dropped,
                            ..
                        }
                    )
            }) || log[churned..].iter().any(|r| r.is(Kind::Pod, Verb::List))
        });
        let after: Vec<Request> = api.log()[churned..].to_vec();
        let gone = after
            .iter()
            .any(|r| r.is(Kind::Pod, Verb::Watch) && r.outcome == Outcome::Gone);
        let relisted = after.iter().any(|r| r.is(Kind::Pod, Verb::List));
        if bookmarks {
            assert!(!gone && !relisted, "resumed in the window: {after:#?}");
        } else {
            assert!(gone, "410 for a version out of the window: {after:#?}");
            log_has(&api, "a relist after the 410", |log| {
                log[churned..].iter().any(|r| r.is(Kind::Pod, Verb::List))
            });
        }
        assert_eq!(store.state().len(), 1, "only node-a's Pod");
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_version_zero_is_served_from_the_cache_after_a_restart() {
    let api = ApiServer::start(None).unwrap();
    services(&api, 3);
    api.restart();
    let svc: Api<Service> = Api::all(client(&api).await);
    let mut s = svc
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    for _ in 0..3 {
        match tokio::time::timeout(SOON, s.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(_)))) => {}
            other => panic!("want a synthetic ADDED, got {other:?}"),
        }
    }
    // An old version is too old for the restarted cache.
    let mut old = svc
        .watch(&WatchParams::default(), "101")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(SOON, old.try_next()).await {
        Ok(Ok(Some(WatchEvent::Error(e)))) => assert_eq!(e.code, 410),
        other => panic!("want 410, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_watches_end_and_the_client_resumes_without_relisting() {
    let api = ApiServer::start_with(
        None,
        Options {
            watch_timeout_cap: Duration::from_secs(1),
            bookmark_interval: Some(Duration::from_millis(200)),
            ..Options::default()
        },
    )
    .unwrap();
    services(&api, 2);
    let (store, writer) = reflector::store::<Service>();
    let task = tokio::spawn(
        watcher(
            Api::<Service>::all(client(&api).await),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each(|_| async {}),
    );
    store.wait_until_ready().await.unwrap();
    let mut last = 0;
    while api
        .log()
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                Outcome::Watched {
                    end: WatchEnd::Timeout,
                    ..
                }
            )
        })
        .count()
        < 3
    {
        last += 1;
        api.apply(obj::service(
            "bulk",
            &format!("n{last}"),
            &["10.96.9.9"],
            &[],
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until(SOON, "every change in the store", || {
        let n = store.state().len();
        async move { n == 2 + last }
    })
    .await;
    let log = api.log();
    let lists = log
        .iter()
        .filter(|r| r.is(Kind::Service, Verb::List))
        .count();
    assert_eq!(lists, 1, "resumed, never relisted: {log:#?}");
    assert!(!log.iter().any(|r| r.outcome == Outcome::Gone));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_closed() {
    let api = ApiServer::start_with(
        None,
        Options {
            watch_buffer: 4,
            slow_watcher_patience: Duration::from_millis(200),
            ..Options::default()
        },
    )
    .unwrap();
    api.apply(obj::namespace("bulk"));
    let mut conn = std::net::TcpStream::connect(api.addr).unwrap();
    write!(
        conn,
        "GET /api/v1/services?watch=true&resourceVersion=0 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    log_has(&api, "the watch open", |log| {
        log.iter().any(|r| r.verb == Verb::Watch)
    });
    // Each event is 64 KiB: the socket buffers fill, then the watch's own buffer.
    let pad = "x".repeat(64 * 1024);
    let mut i = 0u32;
    while !api.log().iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Watched {
                end: WatchEnd::Slow,
                ..
            }
        )
    }) {
        assert!(i < 2000, "never closed: {:#?}", api.log());
        let mut s = obj::service("bulk", &format!("big{i}"), &["10.96.1.1"], &[]);
        s["metadata"]["annotations"] = json!({"pad": pad});
        api.apply(s);
        i += 1;
        if i.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_hit_one_kind_and_act_at_once() {
    let api = ApiServer::start(None).unwrap();
    services(&api, 2);
    let c = client(&api).await;
    let pods: Api<Pod> = Api::all(c.clone());
    let svc: Api<Service> = Api::all(c.clone());
    let slices: Api<EndpointSlice> = Api::all(c.clone());

    api.fail(Some(Kind::Pod), 403, None);
    let err = pods.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_status(err), (403, "Forbidden".into()));
    assert_eq!(
        svc.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    api.clear_faults();
    assert!(pods.list(&ListParams::default()).await.is_ok());

    api.fail(Some(Kind::EndpointSlice), 500, Some(1));
    let err = slices.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_status(err).0, 500);
    assert!(
        slices.list(&ListParams::default()).await.is_ok(),
        "one 500 only"
    );

    // kube-rs retries a 429 after the server's Retry-After: one refused, then served.
    let before = api.log().len();
    api.fail(Some(Kind::Service), 429, Some(1));
    assert_eq!(
        svc.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    let codes: Vec<u16> = api.log()[before..].iter().map(|r| r.status).collect();
    assert_eq!(codes, [429, 200]);

    // Down ends an open watch at once; requests then get 503.
    let mut w = svc
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    for _ in 0..2 {
        w.try_next().await.unwrap();
    }
    api.set_down(true);
    let ended = tokio::time::timeout(SOON, async {
        while let Ok(Some(_)) = w.try_next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the watch stream ended");
    log_has(&api, "the watch logged as dropped", |log| {
        log.iter().any(|r| {
            matches!(
                r.outcome,
                Outcome::Watched {
                    end: WatchEnd::Dropped,
                    ..
                }
            )
        })
    });
    let no_retry = Client::try_from({
        let kc = Kubeconfig::from_yaml(&api.kubeconfig()).unwrap();
        let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        cfg.default_retry = false;
        cfg
    })
    .unwrap();
    let err = Api::<Namespace>::all(no_retry)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(api_status(err).0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_filter_lists_and_watches_see_objects_enter_and_leave() {
    let api = ApiServer::start(None).unwrap();
    api.apply(obj::namespace("shop"));
    api.apply(obj::pod("shop", "a-1", &["10.1.0.1"], Some("node-a")));
    api.apply(obj::pod("shop", "b-1", &["10.1.0.2"], Some("node-b")));
    api.apply(obj::pod("shop", "new-1", &[], None));
    let pods: Api<Pod> = Api::all(client(&api).await);
    let names = |lp: ListParams| {
        let pods = pods.clone();
        async move {
            let mut v: Vec<String> = pods
                .list(&lp)
                .await
                .unwrap()
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            v.sort();
            v
        }
    };
    let on_a = ListParams::default().fields("spec.nodeName=node-a");
    assert_eq!(names(on_a.clone()).await, ["a-1"]);
    assert_eq!(
        names(ListParams::default().fields("spec.nodeName=")).await,
        ["new-1"]
    );
    let running_not_a = "status.phase=Running,status.podIP!=10.1.0.1";
    assert_eq!(
        names(ListParams::default().fields(running_not_a)).await,
        ["b-1"]
    );
    assert_eq!(
        names(ListParams::default().labels("app in (a, new)")).await,
        ["a-1", "new-1"]
    );
    let ns_pods: Api<Pod> = Api::namespaced(client(&api).await, "other");
    assert!(ns_pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let err = pods
        .list(&ListParams::default().fields("spec.restartPolicy=Always"))
        .await
        .unwrap_err();
    assert_eq!(api_status(err).0, 400);

    let rv = pods
        .list(&on_a)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().fields("spec.nodeName=node-a");
    let mut w = pods.watch(&wp, &rv).await.unwrap().boxed();
    api.bind("shop", "new-1", "node-a");
    match tokio::time::timeout(SOON, w.try_next()).await {
        Ok(Ok(Some(WatchEvent::Added(p)))) => assert_eq!(p.name_any(), "new-1"),
        other => panic!("bound Pod enters as ADDED: {other:?}"),
    }
    // Leaving the selection (a Pod is re-created elsewhere under the same name).
    api.apply(obj::pod("shop", "a-1", &["10.1.0.9"], Some("node-c")));
    match tokio::time::timeout(SOON, w.try_next()).await {
        Ok(Ok(Some(WatchEvent::Deleted(p)))) => {
            assert_eq!(p.name_any(), "a-1");
            assert_eq!(
                p.spec.unwrap().node_name.as_deref(),
                Some("node-a"),
                "last matching state"
            );
        }
        other => panic!("Pod leaving the selection is DELETED: {other:?}"),
    }
    api.apply(obj::pod("shop", "b-2", &["10.1.0.3"], Some("node-b")));
    api.apply(obj::pod("shop", "a-2", &["10.1.0.4"], Some("node-a")));
    match tokio::time::timeout(SOON, w.try_next()).await {
        Ok(Ok(Some(WatchEvent::Added(p)))) => assert_eq!(p.name_any(), "a-2", "b-2 not seen"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_carry_what_the_server_owns() {
    let api = ApiServer::start(None).unwrap();
    api.apply(obj::namespace("shop"));
    api.apply(obj::service("shop", "web", &["10.96.0.5"], &[("http", 80)]));
    let c = client(&api).await;
    let svc: Api<Service> = Api::namespaced(c.clone(), "shop");
    let list = svc.list(&ListParams::default()).await.unwrap();
    let web = &list.items[0];
    let uid = web.uid().expect("uid");
    assert!(!web.managed_fields().is_empty() && web.creation_timestamp().is_some());
    api.delete(Kind::Service, "shop", "web");
    api.apply(obj::service("shop", "web", &["10.96.0.5"], &[("http", 80)]));
    let again = svc.list(&ListParams::default()).await.unwrap();
    assert_ne!(
        again.items[0].uid().unwrap(),
        uid,
        "a re-created object is a new one"
    );

    // The EndpointSlice controller's shape: per family, at most 100, generated names.
    let mut eps: Vec<Endpoint> = (0..250)
        .map(|i| {
            Endpoint::ready(&format!("10.1.{}.{}", i / 200, i % 200 + 1))
                .pod("node-a", &format!("web-{i}"))
        })
        .collect();
    eps.push(Endpoint::ready("fd00::1"));
    let names = api.set_endpoints("shop", "web", &eps, &[("http", 8080)]);
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "shop");
    let got = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert_eq!(got.items.len(), 4);
    let svc_uid = again.items[0].uid();
    for s in &got.items {
        assert!(s.endpoints.as_ref().map_or(0, Vec::len) <= 100);
        assert!(s.name_any().starts_with("web-") && s.name_any().len() == 9);
        assert_eq!(s.owner_references()[0].uid, svc_uid.clone().unwrap());
    }
    assert_eq!(
        got.items
            .iter()
            .filter(|s| s.address_type == "IPv6")
            .count(),
        1
    );
    eps.truncate(120);
    let kept = api.set_endpoints("shop", "web", &eps, &[("http", 8080)]);
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|k| names.contains(k)), "updated in place");
    let left = slices
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(left, 2, "the rest deleted");

    // Graceful Pod deletion and a Terminating namespace, as a watch sees them.
    api.apply(obj::pod("shop", "p", &["10.1.0.1"], Some("node-a")));
    let pods: Api<Pod> = Api::all(c.clone());
    let mut w = watch_from_now(&pods).await;
    api.delete_pod("shop", "p", Duration::from_millis(300));
    match w.try_next().await {
        Ok(Some(WatchEvent::Modified(p))) => assert!(p.metadata.deletion_timestamp.is_some()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.try_next().await,
        Ok(Some(WatchEvent::Deleted(_)))
    ));
    let nss: Api<Namespace> = Api::all(c);
    let mut w = watch_from_now(&nss).await;
    api.delete_namespace("shop");
    match w.try_next().await {
        Ok(Some(WatchEvent::Modified(n))) => {
            assert_eq!(n.status.unwrap().phase.as_deref(), Some("Terminating"))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.try_next().await,
        Ok(Some(WatchEvent::Deleted(_)))
    ));
    assert!(api
        .objects()
        .iter()
        .all(|o| o["metadata"]["namespace"] != "shop"));
}
