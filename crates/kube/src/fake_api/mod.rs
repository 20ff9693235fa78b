//! A fake Kubernetes API server in process, behind a `kube::Client` (kube-rs's tower-test
//! approach: `tower_test::mock::pair` and `Client::new(mock_service, "default")`).
//!
//! It serves what the controller uses: list and watch (streaming, with resource versions,
//! history replay, compaction and `410 Gone`) of Namespaces, Pods, NetworkPolicies, Nodes and
//! ClusterNetworkPolicies (equality label selectors honoured; a missing CRD is
//! `fail_next("clusternetworkpolicies", u32::MAX, 404)`), and get/create/replace of Leases with
//! `resourceVersion` compare-and-swap. Tests drive it: add, change and delete objects, break
//! or expire open watches, make requests fail. Feature `testing` only.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use kube::Resource;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

type RespBody = BoxBody<Bytes, Infallible>;
type FrameTx = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// Handle on the fake server; cheap to clone.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    rv: u64,
    resources: HashMap<String, Store>,
    /// `METHOD path?query` of every request, in order.
    log: Vec<String>,
    /// Requests to fail with this status, per resource plural, counted down.
    failures: HashMap<String, (u32, u16)>,
    /// Watch requests to fail with this status, per resource plural, counted down.
    watch_failures: HashMap<String, (u32, u16)>,
    /// Fail every request with 503 (the API server is unreachable).
    down: bool,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<(String, String), Value>,
    history: Vec<(u64, Value)>,
    /// Watches from a resource version below this get `410 Gone`.
    compacted: u64,
    watches: Vec<Watch>,
}

struct Watch {
    tx: FrameTx,
    selector: Vec<(String, String)>,
}

impl FakeApi {
    /// A fake server and a client talking to it. Needs a Tokio runtime.
    pub fn start() -> (kube::Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<RespBody>>();
        let api = FakeApi::default();
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let resp = server.handle(req).await;
                    send.send_response(resp);
                });
            }
        });
        (kube::Client::new(service, "default"), api)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or replaces an object (an ADDED or MODIFIED event).
    pub fn apply<K: Resource<DynamicType = ()> + Serialize>(&self, obj: &K) {
        let plural = K::plural(&()).to_string();
        let value = serde_json::to_value(obj).unwrap_or(Value::Null);
        self.apply_value(&plural, value);
    }

    /// Creates or replaces an object of the resource `plural` given as JSON.
    pub fn apply_value(&self, plural: &str, mut value: Value) {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        value["metadata"]["resourceVersion"] = json!(rv.to_string());
        let id = ident(&value);
        let store = st.resources.entry(plural.to_string()).or_default();
        let old = store.objects.insert(id, value.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        store.emit(rv, kind, value, old.as_ref());
    }

    /// Deletes an object (a DELETED event); no-op if absent.
    pub fn delete<K: Resource<DynamicType = ()>>(&self, namespace: Option<&str>, name: &str) {
        let plural = K::plural(&()).to_string();
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        let store = st.resources.entry(plural).or_default();
        let key = (namespace.unwrap_or_default().to_string(), name.to_string());
        if let Some(mut value) = store.objects.remove(&key) {
            value["metadata"]["resourceVersion"] = json!(rv.to_string());
            store.emit(rv, "DELETED", value, None);
        }
    }

    /// Forgets all history: watches from any earlier resource version get `410 Gone`.
    pub fn compact(&self) {
        let mut st = self.lock();
        let rv = st.rv;
        for store in st.resources.values_mut() {
            store.history.clear();
            store.compacted = rv + 1;
        }
    }

    /// Ends every open watch (the client reconnects from its last resource version).
    pub fn break_watches(&self) {
        let mut st = self.lock();
        for store in st.resources.values_mut() {
            store.watches.clear();
        }
    }

    /// Sends `ERROR 410 Gone` on every open watch and ends it (the client relists).
    pub fn expire_watches(&self) {
        self.compact();
        let mut st = self.lock();
        for store in st.resources.values_mut() {
            for w in store.watches.drain(..) {
                let _ = w.tx.send(Ok(Frame::data(line(&gone_event()))));
            }
        }
    }

    /// The next `count` requests for the resource `plural` fail with `code`.
    pub fn fail_next(&self, plural: &str, count: u32, code: u16) {
        self.lock()
            .failures
            .insert(plural.to_string(), (count, code));
    }

    /// The next `count` watch requests (only) for the resource `plural` fail with `code`.
    pub fn fail_next_watch(&self, plural: &str, count: u32, code: u16) {
        self.lock()
            .watch_failures
            .insert(plural.to_string(), (count, code));
    }

    /// While `down`, every request fails with 503.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Number of open watches on the resource `plural`.
    pub fn open_watches(&self, plural: &str) -> usize {
        let mut st = self.lock();
        st.resources
            .get_mut(plural)
            .map(|s| {
                s.watches.retain(|w| !w.tx.is_closed());
                s.watches.len()
            })
            .unwrap_or(0)
    }

    /// Every stored object of the resource `plural`.
    pub fn values(&self, plural: &str) -> Vec<Value> {
        let st = self.lock();
        st.resources
            .get(plural)
            .map(|s| s.objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The stored object, if any.
    pub fn get_value(&self, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let st = self.lock();
        let key = (namespace.unwrap_or_default().to_string(), name.to_string());
        st.resources.get(plural)?.objects.get(&key).cloned()
    }

    async fn handle(&self, req: Request<Body>) -> Response<RespBody> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = parse_query(req.uri().query().unwrap_or(""));
        let body = match req.into_body().collect_bytes().await {
            Ok(b) => b,
            Err(e) => return status(400, &format!("cannot read body: {e}")),
        };
        let route = route(&path);
        {
            let mut st = self.lock();
            let q = query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            st.log.push(format!("{method} {path}?{q}"));
            if st.down {
                return status(503, "the fake API server is down");
            }
            if let Some(r) = &route {
                if let Some((n, code)) = st.failures.get_mut(&r.plural) {
                    if *n > 0 {
                        *n -= 1;
                        let code = *code;
                        return status(code, "injected failure");
                    }
                }
            }
        }
        let Some(route) = route else {
            return status(404, &format!("no route for {path}"));
        };
        let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
        if watch {
            let mut st = self.lock();
            if let Some((n, code)) = st.watch_failures.get_mut(&route.plural) {
                if *n > 0 {
                    *n -= 1;
                    let code = *code;
                    return status(code, "injected failure");
                }
            }
        }
        match (method.as_str(), route.name.as_deref(), watch) {
            ("GET", None, false) => self.list(&route, &query),
            ("GET", None, true) => self.watch(&route, &query),
            ("GET", Some(name), _) => self.get(&route, name),
            ("POST", None, _) => self.create(&route, &body),
            ("PUT", Some(name), _) => self.replace(&route, name, &body),
            _ => status(405, &format!("{method} not supported on {path}")),
        }
    }

    fn list(&self, route: &Route, query: &HashMap<String, String>) -> Response<RespBody> {
        let mut st = self.lock();
        let rv = st.rv;
        let selector = parse_selector(query.get("labelSelector"));
        let store = st.resources.entry(route.plural.clone()).or_default();
        let items: Vec<Value> = store
            .objects
            .iter()
            .filter(|((ns, _), _)| route.namespace.as_ref().is_none_or(|n| n == ns))
            .map(|(_, v)| v)
            .filter(|v| matches(&selector, v))
            .cloned()
            .collect();
        json_response(
            200,
            &json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            }),
        )
    }

    fn watch(&self, route: &Route, query: &HashMap<String, String>) -> Response<RespBody> {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let selector = parse_selector(query.get("labelSelector"));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        let store = st.resources.entry(route.plural.clone()).or_default();
        if from != 0 && from + 1 < store.compacted {
            let _ = tx.send(Ok(Frame::data(line(&gone_event()))));
            drop(tx);
        } else {
            for (rv, ev) in &store.history {
                if *rv > from {
                    if let Some(ev) = filter_event(&selector, ev) {
                        let _ = tx.send(Ok(Frame::data(line(&ev))));
                    }
                }
            }
            store.watches.push(Watch { tx, selector });
        }
        let body = StreamBody::new(UnboundedReceiverStream::new(rx));
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(body))
            .unwrap_or_else(|_| Response::new(empty()))
    }

    fn get(&self, route: &Route, name: &str) -> Response<RespBody> {
        let st = self.lock();
        let key = (
            route.namespace.clone().unwrap_or_default(),
            name.to_string(),
        );
        match st
            .resources
            .get(&route.plural)
            .and_then(|s| s.objects.get(&key))
        {
            Some(v) => json_response(200, v),
            None => status(404, &format!("{} {name:?} not found", route.plural)),
        }
    }

    fn create(&self, route: &Route, body: &[u8]) -> Response<RespBody> {
        let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
            return status(400, "bad json");
        };
        let mut st = self.lock();
        if let Some(ns) = &route.namespace {
            value["metadata"]["namespace"] = json!(ns);
        }
        let id = ident(&value);
        let exists = st
            .resources
            .get(&route.plural)
            .is_some_and(|s| s.objects.contains_key(&id));
        if exists {
            return status(409, "already exists");
        }
        drop(st);
        self.apply_value(&route.plural, value);
        st = self.lock();
        let v = st
            .resources
            .get(&route.plural)
            .and_then(|s| s.objects.get(&id))
            .cloned()
            .unwrap_or(Value::Null);
        json_response(201, &v)
    }

    fn replace(&self, route: &Route, name: &str, body: &[u8]) -> Response<RespBody> {
        let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
            return status(400, "bad json");
        };
        if let Some(ns) = &route.namespace {
            value["metadata"]["namespace"] = json!(ns);
        }
        let key = (
            route.namespace.clone().unwrap_or_default(),
            name.to_string(),
        );
        {
            let st = self.lock();
            let Some(current) = st
                .resources
                .get(&route.plural)
                .and_then(|s| s.objects.get(&key))
            else {
                return status(404, "not found");
            };
            let want = value["metadata"]["resourceVersion"].as_str().unwrap_or("");
            let have = current["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("");
            if !want.is_empty() && want != have {
                return status(
                    409,
                    "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
                );
            }
        }
        self.apply_value(&route.plural, value);
        let st = self.lock();
        let v = st
            .resources
            .get(&route.plural)
            .and_then(|s| s.objects.get(&key))
            .cloned()
            .unwrap_or(Value::Null);
        json_response(200, &v)
    }
}

impl Store {
    fn emit(&mut self, rv: u64, kind: &str, object: Value, old: Option<&Value>) {
        let event = json!({"type": kind, "object": object});
        self.history.push((rv, event.clone()));
        self.watches.retain(|w| {
            // With a label selector, an object that stops matching is a deletion to that
            // watch and one that starts matching an addition, as the API server does.
            let now = matches(&w.selector, &event["object"]);
            let before = old.is_some_and(|o| matches(&w.selector, o));
            let ev = match (kind, before, now) {
                ("DELETED", _, true) => Some(event.clone()),
                ("DELETED", _, false) => None,
                (_, true, false) => Some(json!({"type": "DELETED", "object": event["object"]})),
                (_, false, true) => Some(json!({"type": "ADDED", "object": event["object"]})),
                (_, true, true) => Some(event.clone()),
                _ => None,
            };
            match ev {
                Some(ev) => w.tx.send(Ok(Frame::data(line(&ev)))).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
    }
}

/// Which resource (and object) a path names.
struct Route {
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match segs.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let own = |s: &str| s.to_string();
    match rest {
        ["namespaces", ns, plural] => Some(Route {
            plural: own(plural),
            namespace: Some(own(ns)),
            name: None,
        }),
        ["namespaces", ns, plural, name] => Some(Route {
            plural: own(plural),
            namespace: Some(own(ns)),
            name: Some(own(name)),
        }),
        [plural] => Some(Route {
            plural: own(plural),
            namespace: None,
            name: None,
        }),
        [plural, name] => Some(Route {
            plural: own(plural),
            namespace: None,
            name: Some(own(name)),
        }),
        _ => None,
    }
}

fn ident(v: &Value) -> (String, String) {
    let m = &v["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v,k2==v2` only; anything else selects everything.
fn parse_selector(s: Option<&String>) -> Vec<(String, String)> {
    s.map(|s| {
        s.split(',')
            .filter_map(|t| {
                let (k, v) = t.split_once("==").or_else(|| t.split_once('='))?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    })
    .unwrap_or_default()
}

fn matches(selector: &[(String, String)], obj: &Value) -> bool {
    selector
        .iter()
        .all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v.as_str()))
}

fn filter_event(selector: &[(String, String)], ev: &Value) -> Option<Value> {
    matches(selector, &ev["object"]).then(|| ev.clone())
}

fn gone_event() -> Value {
    json!({
        "type": "ERROR",
        "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "Expired", "code": 410,
            "message": "too old resource version",
        }
    })
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn empty() -> RespBody {
    BodyExt::boxed(Full::new(Bytes::new()))
}

fn json_response(code: u16, v: &Value) -> Response<RespBody> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(v.to_string()))))
        .unwrap_or_else(|_| Response::new(empty()))
}

fn status(code: u16, message: &str) -> Response<RespBody> {
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

/// Builders of the objects tests and benchmarks feed the fake server.
pub mod objects;
