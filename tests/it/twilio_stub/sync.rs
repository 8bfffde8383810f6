//! Sync: documents, maps and lists with their items, TTLs, validation and per-object
//! write rate limits.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, SecondsFormat, Utc};

use super::*;

const MAX_DATA_BYTES: usize = 16 * 1024;
const MAX_TTL: i64 = 31_536_000;
const WRITES_PER_SECOND: usize = 20;
const MAX_SYNC_PAGE_SIZE: usize = 100;

/// A Sync document, map, map item, list or list item (`name` is the unique name, or the
/// map item key; list items have none, their index is the key of `SyncList::items`).
struct Entry {
    sid: String,
    name: Option<String>,
    data: Value,
    revision: u64,
    expires: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

struct SyncMap {
    meta: Entry,
    items: BTreeMap<String, Entry>,
}

/// `next_index` only grows: indexes of deleted or expired items are never reused.
struct SyncList {
    meta: Entry,
    items: BTreeMap<i64, Entry>,
    next_index: i64,
}

#[derive(Default)]
pub(super) struct Service {
    docs: Vec<Entry>,
    maps: Vec<SyncMap>,
    lists: Vec<SyncList>,
    /// Accepted writes (create, update, delete) per (map unique name, item key): what a
    /// test counts to see that unchanged items are not rewritten.
    item_writes: HashMap<(String, String), usize>,
}

#[derive(Default)]
pub(super) struct Limiter(HashMap<String, VecDeque<Instant>>);

/// Facts a Sync handler needs besides the service's own objects.
struct Env {
    url: String,
    account_sid: String,
    service_sid: String,
    now: DateTime<Utc>,
}

type Res = Result<Reply, Reply>;

impl TwilioStub {
    /// Makes Sync's clock jump forward by `d`: whatever expires within `d` is gone (404)
    /// from now on, as if that much time had passed.
    pub fn advance(&self, d: Duration) {
        let d = chrono::Duration::from_std(d).expect("twilio stub: advance");
        self.lock().clock_offset += d;
    }

    /// A map (`kind` "Maps") or list ("Lists") resource as the API shows it (`sid`,
    /// `date_expires`…), looked up by unique name or sid; None when missing or expired.
    pub fn container(&self, service_sid: &str, kind: &str, name: &str) -> Option<Value> {
        let mut st = self.lock();
        let env = st.env(service_sid);
        let svc = st.services.get_mut(service_sid)?;
        svc.purge(env.now);
        match kind {
            "Maps" => svc.map(name).map(|i| map_json(&env, &svc.maps[i].meta)),
            "Lists" => svc.list(name).map(|i| list_json(&env, &svc.lists[i].meta)),
            _ => None,
        }
    }

    /// The `data` of a document, looked up by unique name (or sid).
    pub fn document(&self, service_sid: &str, unique_name: &str) -> Option<Value> {
        self.with_service(service_sid, |s| {
            s.doc(unique_name).map(|i| s.docs[i].data.clone())
        })
    }

    /// The document's `date_expires` (None when missing or without TTL).
    pub fn document_ttl_expires(&self, service_sid: &str, unique_name: &str) -> Option<String> {
        self.with_service(service_sid, |s| {
            s.doc(unique_name).and_then(|i| s.docs[i].expires.map(ts))
        })
    }

    /// key -> data for every live item of the map (looked up by unique name or sid).
    pub fn map_items(&self, service_sid: &str, map_name: &str) -> BTreeMap<String, Value> {
        self.with_service(service_sid, |s| {
            s.map(map_name).map(|i| {
                let items = &s.maps[i].items;
                items
                    .iter()
                    .map(|(k, e)| (k.clone(), e.data.clone()))
                    .collect()
            })
        })
        .unwrap_or_default()
    }

    /// How many writes (create, update, delete) of the item `key` of the map named
    /// `map_name` were accepted, across re-creations of the map.
    pub fn item_writes(&self, service_sid: &str, map_name: &str, key: &str) -> usize {
        let st = self.lock();
        st.services
            .get(service_sid)
            .and_then(|s| {
                s.item_writes
                    .get(&(map_name.to_string(), key.to_string()))
                    .copied()
            })
            .unwrap_or(0)
    }

    /// (index, data) for every live item of the list (looked up by unique name or sid), in
    /// index order; empty when the list is missing.
    pub fn list_items(&self, service_sid: &str, list_name: &str) -> Vec<(i64, Value)> {
        self.with_service(service_sid, |s| {
            s.list(list_name).map(|i| {
                let items = &s.lists[i].items;
                items.iter().map(|(k, e)| (*k, e.data.clone())).collect()
            })
        })
        .unwrap_or_default()
    }

    fn with_service<T>(&self, sid: &str, f: impl FnOnce(&Service) -> Option<T>) -> Option<T> {
        let mut st = self.lock();
        let now = st.now();
        let svc = st.services.get_mut(sid)?;
        svc.purge(now);
        f(svc)
    }
}

impl State {
    /// Sync's clock: the wall clock plus `advance`d time.
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    fn env(&self, is: &str) -> Env {
        Env {
            url: format!("{}/v1/Services/{is}", self.base_url),
            account_sid: self.account_sid.clone(),
            service_sid: is.to_string(),
            now: self.now(),
        }
    }

    /// Sync. TTL parameters follow twilio_sync_v1.json: a document's `Ttl`; a map's or
    /// list's `CollectionTtl` (alias `Ttl`, ignored when both are given) at its creation or
    /// update, or `CollectionTtl` on an item create/update (an update only together with
    /// `Data` or an item TTL); an item's `ItemTtl` (alias `Ttl`). Unknown objects are
    /// generic 404s (20404), as the API answers for a missing map, list or item.
    pub(super) fn sync(&mut self, c: &Ctx, is: &str, rest: &[&str]) -> Res {
        let env = self.env(is);
        let svc = self.services.entry(is.to_string()).or_default();
        svc.purge(env.now);
        let lim = &mut self.limiter;
        let rate_key = |sid: &str| format!("{is}/{sid}");
        let gone = || not_found(c);
        match (c.method.as_str(), rest) {
            ("POST", ["Documents"]) => {
                let data = parse_data(c)?.unwrap_or_else(|| json!({}));
                let ttl = parse_ttl(c, &["Ttl"])?;
                let name = c.param("UniqueName").map(str::to_string);
                if name.as_deref().is_some_and(|n| svc.doc(n).is_some()) {
                    return Err(Reply::err(409, 54301, "Unique name already exists"));
                }
                let e = Entry::new("ET", name, data, ttl, env.now);
                lim.record(rate_key(&e.sid));
                let body = doc_json(&env, &e);
                svc.docs.push(e);
                Ok(Reply::json(201, body))
            }
            ("GET", ["Documents"]) => {
                let items = svc.docs.iter().map(|d| doc_json(&env, d)).collect();
                Ok(sync_page(
                    &self.base_url,
                    &self.empty_lists,
                    c,
                    "documents",
                    items,
                ))
            }
            (m, ["Documents", id]) => {
                let i = svc.doc(id).ok_or_else(gone)?;
                let key = rate_key(&svc.docs[i].sid);
                match m {
                    "GET" => Ok(Reply::json(200, doc_json(&env, &svc.docs[i]))),
                    "POST" => {
                        lim.check(&key)?;
                        let data = parse_data(c)?;
                        let ttl = parse_ttl(c, &["Ttl"])?;
                        svc.docs[i].update(data, ttl, env.now);
                        lim.record(key);
                        Ok(Reply::json(200, doc_json(&env, &svc.docs[i])))
                    }
                    "DELETE" => {
                        lim.check(&key)?;
                        svc.docs.remove(i);
                        lim.record(key);
                        Ok(Reply::empty(204))
                    }
                    _ => Err(Reply::err(405, 20004, "Method not allowed")),
                }
            }
            ("POST", ["Maps"]) => {
                let ttl = parse_ttl(c, &["CollectionTtl", "Ttl"])?;
                let name = c.param("UniqueName").map(str::to_string);
                if name.as_deref().is_some_and(|n| svc.map(n).is_some()) {
                    return Err(Reply::err(409, 54301, "Unique name already exists"));
                }
                let meta = Entry::new("MP", name, Value::Null, ttl, env.now);
                lim.record(rate_key(&meta.sid));
                let body = map_json(&env, &meta);
                svc.maps.push(SyncMap {
                    meta,
                    items: BTreeMap::new(),
                });
                Ok(Reply::json(201, body))
            }
            ("GET", ["Maps"]) => {
                let items = svc.maps.iter().map(|m| map_json(&env, &m.meta)).collect();
                Ok(sync_page(
                    &self.base_url,
                    &self.empty_lists,
                    c,
                    "maps",
                    items,
                ))
            }
            (m, ["Maps", id, rest @ ..]) => {
                let i = svc.map(id).ok_or_else(gone)?;
                let key = rate_key(&svc.maps[i].meta.sid);
                let map = &mut svc.maps[i];
                match (m, rest) {
                    ("GET", []) => Ok(Reply::json(200, map_json(&env, &map.meta))),
                    ("POST", []) => {
                        lim.check(&key)?;
                        let ttl = parse_ttl(c, &["CollectionTtl", "Ttl"])?;
                        map.meta.update(None, ttl, env.now);
                        lim.record(key);
                        Ok(Reply::json(200, map_json(&env, &map.meta)))
                    }
                    ("DELETE", []) => {
                        lim.check(&key)?;
                        svc.maps.remove(i);
                        lim.record(key);
                        Ok(Reply::empty(204))
                    }
                    ("GET", ["Items"]) => {
                        let from = c.param("From").map(str::to_string);
                        let mut items: Vec<Value> = map
                            .items
                            .iter()
                            .filter(|(k, _)| from.as_ref().is_none_or(|f| in_bounds(c, *k, f)))
                            .map(|(_, e)| item_json(&env, map, e))
                            .collect();
                        if c.param("Order") == Some("desc") {
                            items.reverse();
                        }
                        Ok(sync_page(
                            &self.base_url,
                            &self.empty_lists,
                            c,
                            "items",
                            items,
                        ))
                    }
                    ("POST", ["Items"]) => {
                        let k = c.param("Key").ok_or_else(|| {
                            Reply::err(400, 20001, "Missing required parameter Key")
                        })?;
                        lim.check(&key)?;
                        let data = parse_data(c)?.ok_or_else(|| {
                            Reply::err(400, 20001, "Missing required parameter Data")
                        })?;
                        let ttl = parse_ttl(c, &["ItemTtl", "Ttl"])?;
                        let collection_ttl = parse_ttl(c, &["CollectionTtl"])?;
                        if map.items.contains_key(k) {
                            return Err(Reply::err(409, 54208, "Item already exists"));
                        }
                        let e = Entry::new("", Some(k.to_string()), data, ttl, env.now);
                        let body = item_json(&env, map, &e);
                        map.items.insert(k.to_string(), e);
                        map.meta.renew(collection_ttl, env.now);
                        lim.record(key);
                        count_item_write(&mut svc.item_writes, &map.meta, k);
                        Ok(Reply::json(201, body))
                    }
                    (m, ["Items", k]) => {
                        if !map.items.contains_key(*k) {
                            return Err(gone());
                        }
                        match m {
                            "GET" => Ok(Reply::json(200, item_json(&env, map, &map.items[*k]))),
                            "POST" => {
                                lim.check(&key)?;
                                let (data, ttl, collection_ttl) = item_update(c)?;
                                if let Some(e) = map.items.get_mut(*k) {
                                    e.update(data, ttl, env.now);
                                }
                                map.meta.renew(collection_ttl, env.now);
                                lim.record(key);
                                count_item_write(&mut svc.item_writes, &map.meta, k);
                                Ok(Reply::json(200, item_json(&env, map, &map.items[*k])))
                            }
                            "DELETE" => {
                                lim.check(&key)?;
                                map.items.remove(*k);
                                lim.record(key);
                                count_item_write(&mut svc.item_writes, &map.meta, k);
                                Ok(Reply::empty(204))
                            }
                            _ => Err(Reply::err(405, 20004, "Method not allowed")),
                        }
                    }
                    _ => Err(gone()),
                }
            }
            ("POST", ["Lists"]) => {
                let ttl = parse_ttl(c, &["CollectionTtl", "Ttl"])?;
                let name = c.param("UniqueName").map(str::to_string);
                if name.as_deref().is_some_and(|n| svc.list(n).is_some()) {
                    return Err(Reply::err(409, 54301, "Unique name already exists"));
                }
                let meta = Entry::new("ES", name, Value::Null, ttl, env.now);
                lim.record(rate_key(&meta.sid));
                let body = list_json(&env, &meta);
                svc.lists.push(SyncList {
                    meta,
                    items: BTreeMap::new(),
                    next_index: 0,
                });
                Ok(Reply::json(201, body))
            }
            ("GET", ["Lists"]) => {
                let items = svc.lists.iter().map(|l| list_json(&env, &l.meta)).collect();
                Ok(sync_page(
                    &self.base_url,
                    &self.empty_lists,
                    c,
                    "lists",
                    items,
                ))
            }
            (m, ["Lists", id, rest @ ..]) => {
                let i = svc.list(id).ok_or_else(gone)?;
                let key = rate_key(&svc.lists[i].meta.sid);
                let list = &mut svc.lists[i];
                match (m, rest) {
                    ("GET", []) => Ok(Reply::json(200, list_json(&env, &list.meta))),
                    ("POST", []) => {
                        lim.check(&key)?;
                        let ttl = parse_ttl(c, &["CollectionTtl", "Ttl"])?;
                        list.meta.update(None, ttl, env.now);
                        lim.record(key);
                        Ok(Reply::json(200, list_json(&env, &list.meta)))
                    }
                    ("DELETE", []) => {
                        lim.check(&key)?;
                        svc.lists.remove(i);
                        lim.record(key);
                        Ok(Reply::empty(204))
                    }
                    ("GET", ["Items"]) => {
                        let from = match c.param("From") {
                            None => None,
                            Some(f) => Some(
                                f.trim()
                                    .parse::<i64>()
                                    .map_err(|_| Reply::err(400, 20001, "Invalid From"))?,
                            ),
                        };
                        let mut items: Vec<Value> = list
                            .items
                            .iter()
                            .filter(|(n, _)| from.is_none_or(|f| in_bounds(c, *n, &f)))
                            .map(|(n, e)| list_item_json(&env, list, *n, e))
                            .collect();
                        if c.param("Order") == Some("desc") {
                            items.reverse();
                        }
                        Ok(sync_page(
                            &self.base_url,
                            &self.empty_lists,
                            c,
                            "items",
                            items,
                        ))
                    }
                    ("POST", ["Items"]) => {
                        lim.check(&key)?;
                        let data = parse_data(c)?.ok_or_else(|| {
                            Reply::err(400, 20001, "Missing required parameter Data")
                        })?;
                        let ttl = parse_ttl(c, &["ItemTtl", "Ttl"])?;
                        let collection_ttl = parse_ttl(c, &["CollectionTtl"])?;
                        let n = list.next_index;
                        list.next_index += 1;
                        let e = Entry::new("", None, data, ttl, env.now);
                        let body = list_item_json(&env, list, n, &e);
                        list.items.insert(n, e);
                        list.meta.renew(collection_ttl, env.now);
                        lim.record(key);
                        Ok(Reply::json(201, body))
                    }
                    (m, ["Items", idx]) => {
                        let n = idx
                            .trim()
                            .parse::<i64>()
                            .ok()
                            .filter(|n| list.items.contains_key(n))
                            .ok_or_else(gone)?;
                        match m {
                            "GET" => Ok(Reply::json(
                                200,
                                list_item_json(&env, list, n, &list.items[&n]),
                            )),
                            "POST" => {
                                lim.check(&key)?;
                                let (data, ttl, collection_ttl) = item_update(c)?;
                                if let Some(e) = list.items.get_mut(&n) {
                                    e.update(data, ttl, env.now);
                                }
                                list.meta.renew(collection_ttl, env.now);
                                lim.record(key);
                                Ok(Reply::json(
                                    200,
                                    list_item_json(&env, list, n, &list.items[&n]),
                                ))
                            }
                            "DELETE" => {
                                lim.check(&key)?;
                                list.items.remove(&n);
                                lim.record(key);
                                Ok(Reply::empty(204))
                            }
                            _ => Err(Reply::err(405, 20004, "Method not allowed")),
                        }
                    }
                    _ => Err(gone()),
                }
            }
            _ => Err(gone()),
        }
    }
}

impl Service {
    fn purge(&mut self, now: DateTime<Utc>) {
        self.docs.retain(|d| d.live(now));
        self.maps.retain(|m| m.meta.live(now));
        for m in &mut self.maps {
            m.items.retain(|_, e| e.live(now));
        }
        self.lists.retain(|l| l.meta.live(now));
        for l in &mut self.lists {
            l.items.retain(|_, e| e.live(now));
        }
    }

    fn doc(&self, id: &str) -> Option<usize> {
        self.docs.iter().position(|d| d.is(id))
    }

    fn map(&self, id: &str) -> Option<usize> {
        self.maps.iter().position(|m| m.meta.is(id))
    }

    fn list(&self, id: &str) -> Option<usize> {
        self.lists.iter().position(|l| l.meta.is(id))
    }
}

impl Entry {
    fn new(
        prefix: &str,
        name: Option<String>,
        data: Value,
        ttl: Option<i64>,
        now: DateTime<Utc>,
    ) -> Entry {
        Entry {
            sid: if prefix.is_empty() {
                String::new()
            } else {
                new_sid(prefix)
            },
            name,
            data,
            revision: 0,
            expires: expiry(ttl, now),
            created: now,
            updated: now,
        }
    }

    fn is(&self, id: &str) -> bool {
        self.sid == id || self.name.as_deref() == Some(id)
    }

    fn live(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    /// A container's expiry set by an item write's `CollectionTtl` (0: never expires).
    fn renew(&mut self, collection_ttl: Option<i64>, now: DateTime<Utc>) {
        if collection_ttl.is_some() {
            self.expires = expiry(collection_ttl, now);
        }
    }

    fn update(&mut self, data: Option<Value>, ttl: Option<i64>, now: DateTime<Utc>) {
        if let Some(d) = data {
            self.data = d;
        }
        if ttl.is_some() {
            self.expires = expiry(ttl, now);
        }
        self.revision += 1;
        self.updated = now;
    }
}

impl Limiter {
    /// 429/54009 when the object already had WRITES_PER_SECOND writes in the last second.
    fn check(&mut self, key: &str) -> Result<(), Reply> {
        let now = Instant::now();
        let q = self.0.entry(key.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            q.pop_front();
        }
        if q.len() >= WRITES_PER_SECOND {
            let mut r = Reply::err(429, 54009, "Rate limit exceeded");
            r.headers.push(("Retry-After", "1"));
            return Err(r);
        }
        Ok(())
    }

    /// Counts an accepted write.
    fn record(&mut self, key: String) {
        self.0.entry(key).or_default().push_back(Instant::now());
    }
}

/// Counts an accepted write of item `key` of the map `meta` (by its unique name, else sid).
fn count_item_write(counts: &mut HashMap<(String, String), usize>, meta: &Entry, key: &str) {
    let map = meta.name.clone().unwrap_or_else(|| meta.sid.clone());
    *counts.entry((map, key.to_string())).or_default() += 1;
}

/// Parses `Data`: None when absent; 400/54006 over 16 KiB, 400/54001 when not JSON.
fn parse_data(c: &Ctx) -> Result<Option<Value>, Reply> {
    let Some(raw) = c.param("Data") else {
        return Ok(None);
    };
    if raw.len() > MAX_DATA_BYTES {
        return Err(Reply::err(400, 54006, "Document/item data too large"));
    }
    serde_json::from_str(raw)
        .map(Some)
        .map_err(|_| Reply::err(400, 54001, "Invalid data"))
}

/// The first of `names` present, as a TTL in seconds (0..=31536000, else 400/54011).
fn parse_ttl(c: &Ctx, names: &[&str]) -> Result<Option<i64>, Reply> {
    let Some(raw) = names.iter().find_map(|n| c.param(n)) else {
        return Ok(None);
    };
    match raw.trim().parse::<i64>() {
        Ok(t) if (0..=MAX_TTL).contains(&t) => Ok(Some(t)),
        _ => Err(Reply::err(400, 54011, "Invalid TTL")),
    }
}

/// An item update's `Data`, item TTL and `CollectionTtl`; the last only together with one
/// of the others (400 otherwise, as the definitions say).
type ItemUpdate = (Option<Value>, Option<i64>, Option<i64>);
fn item_update(c: &Ctx) -> Result<ItemUpdate, Reply> {
    let data = parse_data(c)?;
    let ttl = parse_ttl(c, &["ItemTtl", "Ttl"])?;
    let collection_ttl = parse_ttl(c, &["CollectionTtl"])?;
    if collection_ttl.is_some() && data.is_none() && ttl.is_none() {
        return Err(Reply::err(
            400,
            20001,
            "CollectionTtl can only be used together with Data or ItemTtl",
        ));
    }
    Ok((data, ttl, collection_ttl))
}

/// Whether `at` is on the requested side of `From` (`Bounds`: `inclusive`, the default,
/// or `exclusive`), in the page's `Order`.
fn in_bounds<T: Ord>(c: &Ctx, at: &T, from: &T) -> bool {
    let exclusive = c.param("Bounds") == Some("exclusive");
    match (c.param("Order") == Some("desc"), exclusive) {
        (false, false) => at >= from,
        (false, true) => at > from,
        (true, false) => at <= from,
        (true, true) => at < from,
    }
}

/// Sync's lists: `PageSize` at most 100.
fn sync_page(base: &str, empty: &[String], c: &Ctx, key: &str, items: Vec<Value>) -> Reply {
    paged(base, empty, c, key, items, MAX_SYNC_PAGE_SIZE)
}

/// TTL 0 (or none) means "never expires".
fn expiry(ttl: Option<i64>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    ttl.filter(|t| *t > 0)
        .map(|t| now + chrono::Duration::seconds(t))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn common(env: &Env, e: &Entry) -> Value {
    json!({
        "account_sid": env.account_sid,
        "service_sid": env.service_sid,
        "revision": e.revision.to_string(),
        "data": e.data,
        "date_expires": e.expires.map(ts),
        "date_created": ts(e.created),
        "date_updated": ts(e.updated),
        "created_by": "system",
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(x)) = (base.as_object_mut(), extra) {
        b.extend(x);
    }
    base
}

fn doc_json(env: &Env, e: &Entry) -> Value {
    let url = format!("{}/Documents/{}", env.url, e.sid);
    with(
        common(env, e),
        json!({"sid": e.sid, "unique_name": e.name, "url": url}),
    )
}

fn map_json(env: &Env, e: &Entry) -> Value {
    container_json(env, "Maps", e)
}

fn list_json(env: &Env, e: &Entry) -> Value {
    container_json(env, "Lists", e)
}

/// A map or list resource: like a document without `data`, plus `links.items`.
fn container_json(env: &Env, kind: &str, e: &Entry) -> Value {
    let url = format!("{}/{kind}/{}", env.url, e.sid);
    let mut v = with(
        common(env, e),
        json!({"sid": e.sid, "unique_name": e.name, "links": {"items": format!("{url}/Items")}, "url": url}),
    );
    if let Some(o) = v.as_object_mut() {
        o.remove("data");
    }
    v
}

fn item_json(env: &Env, map: &SyncMap, e: &Entry) -> Value {
    let key = e.name.clone().unwrap_or_default();
    let url = format!(
        "{}/Maps/{}/Items/{}",
        env.url,
        map.meta.sid,
        pct_encode(&key)
    );
    with(
        common(env, e),
        json!({"key": key, "map_sid": map.meta.sid, "url": url}),
    )
}

fn list_item_json(env: &Env, list: &SyncList, index: i64, e: &Entry) -> Value {
    let url = format!("{}/Lists/{}/Items/{index}", env.url, list.meta.sid);
    with(
        common(env, e),
        json!({"index": index, "list_sid": list.meta.sid, "url": url}),
    )
}

fn pct_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio_stub::tests::*;

    #[tokio::test]
    async fn documents_lifecycle_ttl_and_validation() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // It sends malformed requests on purpose.
        stub.allow_nonconforming();
        let g = stub
            .post(DOCS, &[("UniqueName", "summary"), ("Data", r#"{"a":1}"#)])
            .await;
        assert_eq!(g.status, 201);
        let sid = g.str("/sid");
        assert!(sid.starts_with("ET") && sid.len() == 34, "{sid}");
        assert_eq!(
            (g.str("/unique_name"), g.str("/revision")),
            ("summary".into(), "0".into())
        );
        assert_eq!(g.body["data"], json!({"a": 1}));
        assert!(g.body["date_expires"].is_null());
        assert_eq!(g.str("/created_by"), "system");
        let dup = stub
            .post(DOCS, &[("UniqueName", "summary"), ("Data", "{}")])
            .await;
        assert_eq!(dup.err(), (409, 54301));

        let g = stub
            .post(&format!("{DOCS}/summary"), &[("Data", r#"{"b":2}"#)])
            .await;
        assert_eq!((g.status, g.str("/revision")), (200, "1".into()));
        assert_eq!(g.body["data"], json!({"b": 2}));
        assert_eq!(
            stub.get(&format!("{DOCS}/{sid}")).await.body["data"],
            json!({"b": 2})
        );
        assert_eq!(stub.document(IS, "summary"), Some(json!({"b": 2})));
        assert_eq!(
            stub.get(&format!("{DOCS}/missing")).await.err(),
            (404, 20404)
        );
        let g = stub
            .post(&format!("{DOCS}/missing"), &[("Data", "{}")])
            .await;
        assert_eq!(g.err(), (404, 20404));

        let g = stub
            .post(DOCS, &[("UniqueName", "ttl"), ("Ttl", "3600")])
            .await;
        assert_eq!(g.status, 201);
        let first = g.str("/date_expires");
        let exp = DateTime::parse_from_rfc3339(&first)
            .unwrap()
            .with_timezone(&Utc);
        assert!((exp - Utc::now()).num_seconds().abs_diff(3600) <= 5);
        assert_eq!(stub.document_ttl_expires(IS, "ttl"), Some(first.clone()));
        let renewed = stub
            .post(&format!("{DOCS}/ttl"), &[("Ttl", "7200")])
            .await
            .str("/date_expires");
        assert!(renewed > first, "{renewed} vs {first}");
        assert_eq!(stub.document_ttl_expires(IS, "ttl"), Some(renewed));

        let g = stub
            .post(DOCS, &[("UniqueName", "x"), ("Data", "{nope")])
            .await;
        assert_eq!(g.err(), (400, 54001));
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(17 * 1024));
        let g = stub
            .post(DOCS, &[("UniqueName", "x"), ("Data", &big)])
            .await;
        assert_eq!(g.err(), (400, 54006));
        let g = stub
            .post(&format!("{DOCS}/summary"), &[("Data", &big)])
            .await;
        assert_eq!(g.err(), (400, 54006));
        for bad in ["-1", "31536001", "soon"] {
            let g = stub.post(DOCS, &[("UniqueName", "x"), ("Ttl", bad)]).await;
            assert_eq!(g.err(), (400, 54011));
        }
        assert!(stub.document(IS, "x").is_none());
        assert_eq!(stub.delete(&format!("{DOCS}/summary")).await.status, 204);
        assert!(stub.document(IS, "summary").is_none());
    }

    #[tokio::test]
    async fn maps_and_items() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let g = stub.post(MAPS, &[("UniqueName", "agents")]).await;
        assert_eq!(g.status, 201);
        let map_sid = g.str("/sid");
        assert!(map_sid.starts_with("MP"));
        assert_eq!(
            stub.post(MAPS, &[("UniqueName", "agents")]).await.err(),
            (409, 54301)
        );
        assert_eq!(
            stub.get(&format!("{MAPS}/{map_sid}"))
                .await
                .str("/unique_name"),
            "agents"
        );
        assert_eq!(stub.get(&format!("{MAPS}/nomap")).await.err(), (404, 20404));

        let g = stub
            .post(
                ITEMS,
                &[
                    ("Key", "WK1"),
                    ("Data", r#"{"s":"idle"}"#),
                    ("ItemTtl", "60"),
                ],
            )
            .await;
        assert_eq!(
            (g.status, g.str("/key"), g.str("/map_sid")),
            (201, "WK1".into(), map_sid.clone())
        );
        assert!(g.body["date_expires"].is_string());
        assert_eq!(
            stub.post(ITEMS, &[("Key", "WK1"), ("Data", "{}")])
                .await
                .err(),
            (409, 54208)
        );
        let g = stub
            .post(&format!("{ITEMS}/WK1"), &[("Data", r#"{"s":"busy"}"#)])
            .await;
        assert_eq!((g.status, g.str("/revision")), (200, "1".into()));
        let g = stub.post(ITEMS, &[("Key", "a b/c"), ("Data", "[1]")]).await;
        assert_eq!(g.status, 201);
        assert!(g.str("/url").ends_with("/Items/a%20b%2Fc"));
        assert_eq!(
            stub.get(&format!("{ITEMS}/a%20b%2Fc")).await.body["data"],
            json!([1])
        );
        assert_eq!(stub.get(&format!("{ITEMS}/WK9")).await.err(), (404, 20404));
        let g = stub.post(&format!("{ITEMS}/WK9"), &[("Data", "{}")]).await;
        assert_eq!(g.err(), (404, 20404));
        assert_eq!(
            stub.get(&format!("{MAPS}/nomap/Items/WK1")).await.err(),
            (404, 20404)
        );
        let g = stub
            .post(
                &format!("{MAPS}/nomap/Items"),
                &[("Key", "k"), ("Data", "{}")],
            )
            .await;
        assert_eq!(g.err(), (404, 20404));
        assert_eq!(
            stub.post(ITEMS, &[("Key", "k"), ("Data", "{")]).await.err(),
            (400, 54001)
        );

        let list = stub.get(&format!("{ITEMS}?PageSize=1")).await;
        assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
        assert_eq!(list.str("/meta/key"), "items");
        assert!(list.body["meta"]["next_page_url"].is_string());
        let seen = stub.map_items(IS, "agents");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen["WK1"], json!({"s": "busy"}));
        assert_eq!(stub.map_items(IS, &map_sid).len(), 2);
        assert_eq!(stub.delete(&format!("{ITEMS}/WK1")).await.status, 204);
        assert!(!stub.map_items(IS, "agents").contains_key("WK1"));
        // Accepted writes only: the create, the update, the delete (not the 409).
        assert_eq!(stub.item_writes(IS, "agents", "WK1"), 3);
        assert_eq!(stub.item_writes(IS, "agents", "WK9"), 0);
        assert!(stub.map_items(IS, "nomap").is_empty());
    }

    fn indexes(g: &Got) -> Vec<i64> {
        let items = g.body["items"].as_array().unwrap();
        items.iter().map(|i| i["index"].as_i64().unwrap()).collect()
    }

    #[tokio::test]
    async fn lists_create_fetch_duplicate_missing_and_delete() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        // It sends malformed requests on purpose.
        stub.allow_nonconforming();
        let g = stub
            .post(LISTS, &[("UniqueName", "queue"), ("Ttl", "3600")])
            .await;
        assert_eq!(g.status, 201);
        let sid = g.str("/sid");
        assert!(sid.starts_with("ES") && sid.len() == 34, "{sid}");
        assert!(sid[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{sid}");
        assert_eq!(
            (
                g.str("/unique_name"),
                g.str("/revision"),
                g.str("/created_by")
            ),
            ("queue".into(), "0".into(), "system".into())
        );
        assert_eq!(
            (g.str("/account_sid"), g.str("/service_sid")),
            (AC.into(), IS.into())
        );
        assert_eq!(g.str("/url"), format!("{}{LISTS}/{sid}", stub.base_url()));
        assert!(g.body.get("data").is_none());
        for f in ["date_expires", "date_created", "date_updated"] {
            assert!(g.body[f].is_string(), "{f}");
        }
        assert_eq!(
            stub.post(LISTS, &[("UniqueName", "queue")]).await.err(),
            (409, 54301)
        );
        let g = stub
            .post(LISTS, &[("UniqueName", "other"), ("CollectionTtl", "0")])
            .await;
        assert_eq!(g.status, 201);
        assert!(g.body["date_expires"].is_null());
        for bad in ["-1", "31536001", "soon"] {
            let g = stub.post(LISTS, &[("UniqueName", "x"), ("Ttl", bad)]).await;
            assert_eq!(g.err(), (400, 54011));
        }
        assert_eq!(
            stub.get(&format!("{LISTS}/{sid}"))
                .await
                .str("/unique_name"),
            "queue"
        );
        assert_eq!(stub.get(&format!("{LISTS}/queue")).await.str("/sid"), sid);
        assert_eq!(stub.get(LISTS).await.sids("lists").len(), 2);
        assert_eq!(
            stub.get(&format!("{LISTS}/nolist")).await.err(),
            (404, 20404)
        );
        assert_eq!(
            stub.delete(&format!("{LISTS}/nolist")).await.err(),
            (404, 20404)
        );
        assert_eq!(stub.delete(&format!("{LISTS}/{sid}")).await.status, 204);
        assert_eq!(
            stub.get(&format!("{LISTS}/queue")).await.err(),
            (404, 20404)
        );
        assert_eq!(
            stub.post(LISTS, &[("UniqueName", "queue")]).await.status,
            201
        );
        let recs = stub.requests();
        let last = recs.last().unwrap();
        assert_eq!(
            (last.method.as_str(), last.path.as_str(), last.status),
            ("POST", LISTS, 201)
        );
        assert_eq!(
            last.form,
            vec![("UniqueName".to_string(), "queue".to_string())]
        );
    }

    #[tokio::test]
    async fn list_items_lifecycle() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let list_sid = stub
            .post(LISTS, &[("UniqueName", "queue")])
            .await
            .str("/sid");
        let mut created = Vec::new();
        for i in 0..3 {
            let g = stub
                .post(LIST_ITEMS, &[("Data", &format!(r#"{{"n":{i}}}"#))])
                .await;
            assert_eq!(g.status, 201);
            assert_eq!(
                (g.str("/list_sid"), g.str("/revision"), g.str("/created_by")),
                (list_sid.clone(), "0".into(), "system".into())
            );
            assert_eq!(g.body["data"], json!({"n": i}));
            assert!(g.body["date_expires"].is_null());
            created.push(g.body["index"].as_i64().unwrap());
        }
        assert_eq!(created, [0, 1, 2]);
        let g = stub.get(&format!("{LIST_ITEMS}/1")).await;
        assert_eq!((g.status, &g.body["data"]), (200, &json!({"n": 1})));
        assert_eq!(
            g.str("/url"),
            format!("{}{LISTS}/{list_sid}/Items/1", stub.base_url())
        );
        assert_eq!(
            (g.str("/account_sid"), g.str("/service_sid")),
            (AC.into(), IS.into())
        );

        // Update: data replaced, revision bumped, Ttl renews expiry.
        let g = stub
            .post(&format!("{LIST_ITEMS}/1"), &[("Data", r#"{"n":"one"}"#)])
            .await;
        assert_eq!((g.status, g.str("/revision")), (200, "1".into()));
        assert_eq!(g.body["data"], json!({"n": "one"}));
        let g = stub
            .post(LIST_ITEMS, &[("Data", "[3]"), ("ItemTtl", "60")])
            .await;
        assert_eq!((g.status, g.body["index"].as_i64()), (201, Some(3)));
        let first = g.str("/date_expires");
        let exp = DateTime::parse_from_rfc3339(&first).unwrap();
        assert!(
            (exp.with_timezone(&Utc) - Utc::now())
                .num_seconds()
                .abs_diff(60)
                <= 5
        );
        let g = stub
            .post(&format!("{LIST_ITEMS}/3"), &[("Ttl", "7200")])
            .await;
        let renewed = g.str("/date_expires");
        assert!(renewed > first, "{renewed} vs {first}");
        assert_eq!(g.body["data"], json!([3]));

        // Validation.
        assert_eq!(stub.post(LIST_ITEMS, &[]).await.err(), (400, 20001));
        assert_eq!(
            stub.post(LIST_ITEMS, &[("Data", "{")]).await.err(),
            (400, 54001)
        );
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(17 * 1024));
        assert_eq!(
            stub.post(LIST_ITEMS, &[("Data", &big)]).await.err(),
            (400, 54006)
        );
        assert_eq!(
            stub.post(&format!("{LIST_ITEMS}/0"), &[("Data", &big)])
                .await
                .err(),
            (400, 54006)
        );
        assert_eq!(
            stub.post(LIST_ITEMS, &[("Data", "{}"), ("ItemTtl", "-5")])
                .await
                .err(),
            (400, 54011)
        );

        // Paging and order.
        let g = stub.get(&format!("{LIST_ITEMS}?PageSize=2")).await;
        assert_eq!((g.status, indexes(&g)), (200, vec![0, 1]));
        assert_eq!(g.str("/meta/key"), "items");
        let next = g.str("/meta/next_page_url");
        let g = send("GET", &next, &[], Some((AC, TOKEN))).await;
        assert_eq!(indexes(&g), [2, 3]);
        assert!(g.body["meta"]["next_page_url"].is_null());
        let g = stub.get(&format!("{LIST_ITEMS}?Order=desc")).await;
        assert_eq!(indexes(&g), [3, 2, 1, 0]);
        let g = stub
            .get(&format!("{LISTS}/{list_sid}/Items?Order=asc"))
            .await;
        assert_eq!(indexes(&g), [0, 1, 2, 3]);

        // Delete; indexes are never reused, even the last one.
        assert_eq!(stub.delete(&format!("{LIST_ITEMS}/3")).await.status, 204);
        assert_eq!(stub.delete(&format!("{LIST_ITEMS}/0")).await.status, 204);
        let g = stub.post(LIST_ITEMS, &[("Data", r#""new""#)]).await;
        assert_eq!((g.status, g.body["index"].as_i64()), (201, Some(4)));
        assert_eq!(
            stub.list_items(IS, "queue"),
            vec![
                (1, json!({"n": "one"})),
                (2, json!({"n": 2})),
                (4, json!("new")),
            ]
        );
        assert_eq!(stub.list_items(IS, &list_sid).len(), 3);
        assert!(stub.list_items(IS, "nolist").is_empty());
        assert!(stub.list_items("ISnone", "queue").is_empty());

        // Missing items and lists.
        for path in ["0", "3", "99", "-1", "abc"] {
            let p = format!("{LIST_ITEMS}/{path}");
            assert_eq!(stub.get(&p).await.err(), (404, 20404), "{p}");
        }
        let p = format!("{LIST_ITEMS}/0");
        assert_eq!(stub.post(&p, &[("Data", "{}")]).await.err(), (404, 20404));
        assert_eq!(stub.delete(&p).await.err(), (404, 20404));
        let missing = format!("{LISTS}/nolist/Items");
        assert_eq!(
            stub.post(&missing, &[("Data", "{}")]).await.err(),
            (404, 20404)
        );
        assert_eq!(stub.get(&missing).await.err(), (404, 20404));
        for m in ["GET", "POST", "DELETE"] {
            let g = stub
                .call(m, &format!("{missing}/1"), &[("Data", "{}")])
                .await;
            assert_eq!(g.err(), (404, 20404), "{m}");
        }
    }

    #[tokio::test]
    async fn list_item_writes_are_rate_limited_on_the_list() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let queue = format!("{LISTS}/queue");
        assert_eq!(
            stub.post(LISTS, &[("UniqueName", "queue")]).await.status,
            201
        );
        assert_eq!(
            stub.post(LISTS, &[("UniqueName", "cold")]).await.status,
            201
        );
        let check_429 = |g: &Got| {
            assert_eq!(
                (g.err(), g.retry_after.as_deref()),
                ((429, 54009), Some("1"))
            );
        };
        // Item creates alone exhaust the list's budget, and then the list itself is
        // limited too: one counter per list.
        let mut statuses = Vec::new();
        for _ in 0..24 {
            let g = stub.post(LIST_ITEMS, &[("Data", "{}")]).await;
            statuses.push(g.status);
            if g.status == 429 {
                check_429(&g);
                check_429(&stub.post(&queue, &[("Ttl", "0")]).await);
                break;
            }
            assert_eq!(g.status, 201);
        }
        assert_eq!(statuses.last(), Some(&429), "creates: {statuses:?}");
        // Rejected creates use up no index; reads are not limited; other lists are not.
        let created = statuses.len() as i64 - 1;
        let idx: Vec<i64> = stub.list_items(IS, "queue").iter().map(|p| p.0).collect();
        assert_eq!(idx, (0..created).collect::<Vec<_>>());
        assert_eq!(stub.get(&format!("{LIST_ITEMS}/0")).await.status, 200);
        assert_eq!(stub.get(LIST_ITEMS).await.status, 200);
        let cold = format!("{LISTS}/cold/Items");
        assert_eq!(stub.post(&cold, &[("Data", "{}")]).await.status, 201);

        // After the window slides, item updates alone exhaust it again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let item0 = format!("{LIST_ITEMS}/0");
        let mut statuses = Vec::new();
        for i in 0..24 {
            let g = stub.post(&item0, &[("Data", &format!("{i}"))]).await;
            statuses.push(g.status);
            if g.status == 429 {
                check_429(&g);
                check_429(&stub.post(LIST_ITEMS, &[("Data", "{}")]).await);
                break;
            }
            assert_eq!(g.status, 200);
        }
        assert_eq!(statuses.last(), Some(&429), "updates: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(stub.delete(&item0).await.status, 204);
        assert_eq!(stub.post(LIST_ITEMS, &[("Data", "{}")]).await.status, 201);
        assert!(stub
            .requests()
            .iter()
            .any(|r| r.status == 429 && r.path.starts_with(LIST_ITEMS)));
    }

    #[tokio::test]
    async fn sync_writes_are_rate_limited_per_object() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        assert_eq!(stub.post(DOCS, &[("UniqueName", "hot")]).await.status, 201);
        assert_eq!(stub.post(DOCS, &[("UniqueName", "cold")]).await.status, 201);
        let hot = format!("{DOCS}/hot");
        let mut limited = 0;
        for i in 0..25 {
            let g = stub
                .post(&hot, &[("Data", &format!(r#"{{"i":{i}}}"#))])
                .await;
            if g.status == 429 {
                assert_eq!(
                    (g.err(), g.retry_after.as_deref()),
                    ((429, 54009), Some("1"))
                );
                limited += 1;
            } else {
                assert_eq!(g.status, 200);
            }
        }
        assert!(limited > 0, "expected some 429s");
        assert_eq!(
            stub.post(&format!("{DOCS}/cold"), &[("Data", "{}")])
                .await
                .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(stub.post(&hot, &[("Data", "{}")]).await.status, 200);

        assert_eq!(
            stub.post(MAPS, &[("UniqueName", "agents")]).await.status,
            201
        );
        let mut statuses = Vec::new();
        for i in 0..22 {
            let k = format!("k{i}");
            statuses.push(
                stub.post(ITEMS, &[("Key", &k), ("Data", "{}")])
                    .await
                    .status,
            );
        }
        assert!(
            statuses.contains(&429),
            "items count against their map: {statuses:?}"
        );
        assert!(stub.requests().iter().any(|r| r.status == 429));
    }

    fn expires_in(g: &Got, now: DateTime<Utc>) -> i64 {
        let t = DateTime::parse_from_rfc3339(&g.str("/date_expires")).unwrap();
        (t.with_timezone(&Utc) - now).num_seconds()
    }

    #[tokio::test]
    async fn missing_sync_objects_are_generic_404s() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let want = |path: &str| {
            json!({"code": 20404, "message": format!("The requested resource {path} was not found"),
                   "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404})
        };
        for (m, path, form) in [
            ("POST", format!("{DOCS}/nodoc"), &[("Data", "{}")][..]),
            ("POST", format!("{MAPS}/nomap/Items/k"), &[("Data", "{}")]),
            (
                "POST",
                format!("{MAPS}/nomap/Items"),
                &[("Key", "k"), ("Data", "{}")],
            ),
            ("GET", format!("{LISTS}/nolist/Items"), &[]),
            ("POST", format!("{LISTS}/nolist/Items"), &[("Data", "{}")]),
        ] {
            let g = stub.call(m, &path, form).await;
            assert_eq!((g.status, &g.body), (404, &want(&path)), "{m} {path}");
        }
    }

    #[tokio::test]
    async fn container_ttl_follows_collection_ttl_and_item_ttl_rules() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        let now = Utc::now();
        // CollectionTtl wins over its alias Ttl.
        let g = stub
            .post(
                MAPS,
                &[
                    ("UniqueName", "agents"),
                    ("Ttl", "50"),
                    ("CollectionTtl", "100"),
                ],
            )
            .await;
        assert!(expires_in(&g, now).abs_diff(100) <= 5, "{}", g.body);
        // An item's ItemTtl (or Ttl) is the item's own, not the map's.
        let g = stub
            .post(
                ITEMS,
                &[
                    ("Key", "a"),
                    ("Data", "{}"),
                    ("ItemTtl", "1000"),
                    ("Ttl", "7"),
                ],
            )
            .await;
        assert!(expires_in(&g, now).abs_diff(1000) <= 5, "{}", g.body);
        let map = stub.container(IS, "Maps", "agents").unwrap();
        let exp = DateTime::parse_from_rfc3339(map["date_expires"].as_str().unwrap()).unwrap();
        assert!((exp.with_timezone(&Utc) - now).num_seconds().abs_diff(100) <= 5);
        // CollectionTtl on an item write pushes the map out.
        let g = stub
            .post(
                &format!("{ITEMS}/a"),
                &[("Data", "{}"), ("CollectionTtl", "3000")],
            )
            .await;
        assert_eq!(g.status, 200);
        let map = stub.container(IS, "Maps", "agents").unwrap();
        let exp = DateTime::parse_from_rfc3339(map["date_expires"].as_str().unwrap()).unwrap();
        assert!((exp.with_timezone(&Utc) - now).num_seconds().abs_diff(3000) <= 5);
        // ... but only together with Data or an item TTL.
        let g = stub
            .post(&format!("{ITEMS}/a"), &[("CollectionTtl", "9")])
            .await;
        assert_eq!(g.err(), (400, 20001));
        // Time passes: the item (1000 s) goes, the map (3000 s) stays; then the map goes.
        stub.advance(Duration::from_secs(1500));
        assert_eq!(stub.get(&format!("{ITEMS}/a")).await.err(), (404, 20404));
        assert!(stub.container(IS, "Maps", "agents").is_some());
        stub.advance(Duration::from_secs(2000));
        assert_eq!(
            stub.get(&format!("{MAPS}/agents")).await.err(),
            (404, 20404)
        );
        assert!(stub.container(IS, "Maps", "agents").is_none());

        // Lists: the same, CollectionTtl on an append renews the list.
        let g = stub
            .post(LISTS, &[("UniqueName", "queue"), ("CollectionTtl", "10")])
            .await;
        let list_sid = g.str("/sid");
        stub.advance(Duration::from_secs(8));
        let g = stub
            .post(
                LIST_ITEMS,
                &[("Data", "{}"), ("ItemTtl", "30"), ("CollectionTtl", "30")],
            )
            .await;
        assert_eq!(g.status, 201);
        stub.advance(Duration::from_secs(8));
        // Without the renewal the list would be gone by now.
        let l = stub.container(IS, "Lists", "queue").expect("list renewed");
        assert_eq!(l["sid"], list_sid);
        // An update with only ItemTtl keeps the list's expiry as it was.
        let g = stub
            .post(&format!("{LIST_ITEMS}/0"), &[("ItemTtl", "100")])
            .await;
        assert_eq!(g.status, 200);
        stub.advance(Duration::from_secs(25));
        assert!(stub.container(IS, "Lists", "queue").is_none());
        assert_eq!(stub.get(LIST_ITEMS).await.err(), (404, 20404));
        // Documents: Ttl, renewed by an update's Ttl; expired ones are 404s.
        stub.post(DOCS, &[("UniqueName", "d"), ("Ttl", "10")]).await;
        stub.advance(Duration::from_secs(8));
        assert_eq!(
            stub.post(&format!("{DOCS}/d"), &[("Ttl", "10")])
                .await
                .status,
            200
        );
        stub.advance(Duration::from_secs(8));
        assert!(stub.document(IS, "d").is_some());
        stub.advance(Duration::from_secs(3));
        assert_eq!(stub.get(&format!("{DOCS}/d")).await.err(), (404, 20404));
    }

    #[tokio::test]
    async fn list_items_read_from_an_index_and_pages_stop_at_100() {
        let stub = TwilioStub::start(AC, TOKEN).await;
        stub.post(LISTS, &[("UniqueName", "queue")]).await;
        for i in 0..5 {
            stub.post(LIST_ITEMS, &[("Data", &format!("[{i}]"))]).await;
        }
        let g = stub.get(&format!("{LIST_ITEMS}?From=2")).await;
        assert_eq!(indexes(&g), [2, 3, 4]);
        let g = stub
            .get(&format!("{LIST_ITEMS}?From=2&Bounds=exclusive"))
            .await;
        assert_eq!(indexes(&g), [3, 4]);
        let g = stub.get(&format!("{LIST_ITEMS}?From=2&Order=desc")).await;
        assert_eq!(indexes(&g), [2, 1, 0]);
        let g = stub.get(&format!("{LIST_ITEMS}?PageSize=1000")).await;
        assert_eq!(g.body["meta"]["page_size"], 100);
    }
}
