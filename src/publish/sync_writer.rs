//! Writes to one Twilio Sync service: documents, map items and list items, creating
//! what is missing.
//!
//! Guarantees:
//! - a missing document, map or list is created on any 404 (Sync answers a missing map
//!   with a generic 20404 as often as with 54200), then written; a create that meets an
//!   existing object (409) becomes an update;
//! - with a TTL, every document write sends `Ttl` and every item write sends both
//!   `ItemTtl` and `CollectionTtl`: per Sync's API an item write that carries
//!   `CollectionTtl` is the way to push out its map's or list's own expiry, so a
//!   container lives as long as its items are renewed;
//! - a list item is never appended twice: appends are sent with
//!   [`Idempotency::Once`](crate::twilio::Idempotency), and after a failure that may have
//!   been applied (5xx, timeout, connection lost) the list is read back and an item that
//!   did land is adopted instead of being appended again.

use crate::backoff::Backoff;
use crate::twilio::types::{self, SyncListItem, SyncMapItem};
use crate::twilio::{segment, TwilioClient, TwilioError};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Appends to one list tried at most this many times when their outcome stays unknown.
const APPEND_ATTEMPTS: u32 = 4;
/// Between those appends: 500 ms, 1 s, 2 s (attempts 1 to 3).
const APPEND_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
/// Sync item lists return at most 100 items a page.
const PAGE_SIZE: usize = 100;

/// Writes to one Sync service. Cheap to clone.
#[derive(Clone)]
pub struct SyncWriter {
    client: TwilioClient,
    service_sid: String,
    ttl: u64,
}

/// What this writer knows a Sync list holds, kept between [`SyncWriter::write_list`] calls
/// (updated in place, so a call that fails half way loses nothing it learned).
#[derive(Debug, Default)]
pub struct ListState {
    items: Vec<ListItem>,
    /// The highest index the list has had since it was created (indexes never come back).
    watermark: Option<i64>,
    /// False until the list was read once, and after an append whose outcome is unknown:
    /// items above `watermark` may exist that `items` lacks.
    synced: bool,
}

#[derive(Debug)]
struct ListItem {
    index: i64,
    data: Value,
    /// When we last wrote it; None when adopted from a read.
    at: Option<Instant>,
}

impl ListState {
    /// The rows the list holds, in order, as far as this writer knows.
    pub fn rows(&self) -> impl Iterator<Item = &Value> {
        self.items.iter().map(|i| &i.data)
    }

    fn push(&mut self, index: i64, data: Value, at: Option<Instant>) {
        self.watermark = Some(self.watermark.map_or(index, |w| w.max(index)));
        self.items.push(ListItem { index, data, at });
    }
}

enum Append {
    Done,
    /// The position was filled by what the list turned out to hold.
    Adopted,
    /// The list is missing.
    NoList(TwilioError),
}

/// What a [`SyncWriter`] needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service_sid: String,
    /// Seconds objects live after their last write (0: forever).
    pub ttl: u64,
}

impl Settings {
    pub fn from_config(cfg: &crate::config::Config) -> Settings {
        Settings {
            service_sid: cfg.twilio.sync_service_sid.clone(),
            ttl: cfg.publish.ttl_seconds,
        }
    }
}

impl SyncWriter {
    pub fn new(settings: Settings, client: TwilioClient) -> SyncWriter {
        SyncWriter {
            client,
            service_sid: settings.service_sid,
            ttl: settings.ttl,
        }
    }

    /// The same writer with another TTL (0 = never expire).
    pub fn with_ttl(mut self, ttl: u64) -> SyncWriter {
        self.ttl = ttl;
        self
    }

    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// With a TTL, objects written this long ago are written again (half the TTL), so
    /// that nothing expires while the service runs.
    pub fn renew_after(&self) -> Option<Duration> {
        renew_after(self.ttl)
    }

    fn due(&self, at: Option<Instant>) -> bool {
        self.renew_after()
            .is_some_and(|d| at.is_none_or(|t| t.elapsed() >= d))
    }

    fn service_url(&self, rest: &str) -> String {
        format!(
            "{}/v1/Services/{}/{rest}",
            self.client.sync_url,
            segment(&self.service_sid)
        )
    }

    fn ttl_form(&self, keys: &[&'static str], form: &mut Vec<(&'static str, String)>) {
        if self.ttl > 0 {
            form.extend(keys.iter().map(|k| (*k, self.ttl.to_string())));
        }
    }

    /// `Data` plus, with a TTL, the item's and its container's TTL.
    fn item_form(&self, data: &Value) -> Vec<(&'static str, String)> {
        let mut form = vec![("Data", data.to_string())];
        self.ttl_form(&["ItemTtl", "CollectionTtl"], &mut form);
        form
    }

    pub async fn write_document(&self, name: &str, data: &Value) -> Result<(), TwilioError> {
        let mut form = vec![("Data", data.to_string())];
        self.ttl_form(&["Ttl"], &mut form);
        let url = self.service_url(&format!("Documents/{}", segment(name)));
        match self.client.post(&url, &form).await {
            Err(e) if e.status() == Some(404) => {
                let mut create = form.clone();
                create.push(("UniqueName", name.to_owned()));
                match self
                    .client
                    .post(&self.service_url("Documents"), &create)
                    .await
                {
                    // Someone created it in between: update after all.
                    Err(e) if e.status() == Some(409) => {
                        self.client.post(&url, &form).await.map(drop)
                    }
                    r => r.map(drop),
                }
            }
            r => r.map(drop),
        }
    }

    /// Creates a map or list container (409: it exists, fine).
    async fn create_container(&self, kind: &str, name: &str) -> Result<(), TwilioError> {
        let mut m = vec![("UniqueName", name.to_owned())];
        self.ttl_form(&["CollectionTtl"], &mut m);
        match self.client.post(&self.service_url(kind), &m).await {
            Err(e) if e.status() != Some(409) => Err(e),
            _ => Ok(()),
        }
    }

    /// Updates a map item, or creates it (and the map) when missing.
    pub async fn write_item(&self, map: &str, key: &str, data: &Value) -> Result<(), TwilioError> {
        let form = self.item_form(data);
        let item_url = self.service_url(&format!("Maps/{}/Items/{}", segment(map), segment(key)));
        let items_url = self.service_url(&format!("Maps/{}/Items", segment(map)));
        match self.client.post(&item_url, &form).await {
            Err(e) if e.status() == Some(404) => {}
            r => return r.map(drop),
        }
        let mut create = form.clone();
        create.push(("Key", key.to_owned()));
        // Any 404 on the create means the map is missing, whatever its code.
        let r = match self.client.post(&items_url, &create).await {
            Err(e) if e.status() == Some(404) => {
                self.create_container("Maps", map).await?;
                self.client.post(&items_url, &create).await
            }
            r => r,
        };
        match r {
            Err(e) if e.status() == Some(409) => self.client.post(&item_url, &form).await.map(drop),
            r => r.map(drop),
        }
    }

    pub async fn delete_item(&self, map: &str, key: &str) -> Result<(), TwilioError> {
        let url = self.service_url(&format!("Maps/{}/Items/{}", segment(map), segment(key)));
        match self.client.delete(&url).await {
            Err(e) if e.status() == Some(404) => Ok(()),
            r => r,
        }
    }

    /// Every item of a map, all pages; `None` when the map is missing.
    pub async fn read_map(&self, map: &str) -> Result<Option<Vec<SyncMapItem>>, TwilioError> {
        let url = self.service_url(&format!("Maps/{}/Items?PageSize={PAGE_SIZE}", segment(map)));
        match self.client.list::<SyncMapItem>(&url).await {
            Err(e) if e.status() == Some(404) => Ok(None),
            r => r.map(Some),
        }
    }

    /// Makes a list hold `rows`, in order: updates the items whose data changed (and,
    /// with a TTL, those written half a TTL ago), appends the new ones, deletes the
    /// surplus; a missing list is created and written in full. Writes are paced to stay
    /// under Sync's 20/s per list. Returns the number of writes.
    pub async fn write_list(
        &self,
        list: &str,
        st: &mut ListState,
        rows: &[Value],
    ) -> Result<usize, TwilioError> {
        let items_url = self.service_url(&format!("Lists/{}/Items", segment(list)));
        if !st.synced && !self.adopt(&items_url, st).await? {
            st.synced = true; // missing: empty, created on the first append
        }
        let mut writes = 0;
        let mut stale: Vec<i64> = Vec::new();
        let mut created = false;
        let mut i = 0;
        while i < rows.len() {
            let row = &rows[i];
            if let Some(it) = st.items.get(i) {
                if it.data == *row && !self.due(it.at) {
                    i += 1;
                    continue;
                }
                let idx = it.index;
                pace().await;
                match self
                    .client
                    .post(&format!("{items_url}/{idx}"), &self.item_form(row))
                    .await
                {
                    Ok(_) => {
                        st.items[i] = ListItem {
                            index: idx,
                            data: row.clone(),
                            at: Some(Instant::now()),
                        };
                        writes += 1;
                        i += 1;
                    }
                    // Gone: appending keeps the order only if the items after it go too.
                    Err(e) if e.status() == Some(404) => {
                        stale.extend(st.items.drain(i..).map(|it| it.index));
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            match self.append(&items_url, st, row).await? {
                Append::Done => {
                    writes += 1;
                    i += 1;
                }
                Append::Adopted => writes += 1,
                Append::NoList(_) if !created => {
                    // The list is gone with all its items: create it, write every row.
                    self.create_container("Lists", list).await?;
                    created = true;
                    st.items.clear();
                    st.watermark = None;
                    st.synced = true;
                    stale.clear();
                    i = 0;
                }
                Append::NoList(e) => return Err(e),
            }
        }
        if st.items.len() > rows.len() {
            stale.extend(st.items.drain(rows.len()..).map(|it| it.index));
        }
        for idx in stale {
            pace().await;
            match self.client.delete(&format!("{items_url}/{idx}")).await {
                Err(e) if e.status() != Some(404) => return Err(e),
                _ => writes += 1,
            }
        }
        Ok(writes)
    }

    /// Appends `row` once. A failure that may have been applied is reconciled by reading
    /// the list back: an item that did land fills the position (`Adopted`), else the
    /// append is tried again.
    async fn append(
        &self,
        items_url: &str,
        st: &mut ListState,
        row: &Value,
    ) -> Result<Append, TwilioError> {
        let pos = st.items.len();
        let form = self.item_form(row);
        let mut attempt = 0;
        loop {
            pace().await;
            let err = match self.client.post_once(items_url, &form).await {
                Ok(v) => match types::or_default::<SyncListItem>(v).index {
                    Some(idx) => {
                        st.push(idx, row.clone(), Some(Instant::now()));
                        return Ok(Append::Done);
                    }
                    None => TwilioError::Decode {
                        url: items_url.to_owned(),
                        reason: "the created list item has no index".into(),
                    },
                },
                Err(e) if e.status() == Some(404) => return Ok(Append::NoList(e)),
                Err(e) => e,
            };
            if !err.outcome_unknown() {
                return Err(err);
            }
            st.synced = false;
            tracing::warn!(url = items_url, error = %err, "list append may have been applied; reading the list back before appending again");
            if !self.adopt(items_url, st).await? {
                return Ok(Append::NoList(err));
            }
            if st.items.len() > pos {
                return Ok(Append::Adopted);
            }
            attempt += 1;
            if attempt >= APPEND_ATTEMPTS {
                return Err(err);
            }
            tokio::time::sleep(APPEND_BACKOFF.delay(attempt)).await;
        }
    }

    /// Reads the items above the watermark (all of them the first time) and adds them to
    /// `st`. Returns false when the list is missing (then `st` is empty).
    async fn adopt(&self, items_url: &str, st: &mut ListState) -> Result<bool, TwilioError> {
        let from = st.watermark.map_or(0, |w| w + 1);
        let url =
            format!("{items_url}?Order=asc&From={from}&Bounds=inclusive&PageSize={PAGE_SIZE}");
        let found = match self.client.list::<SyncListItem>(&url).await {
            Err(e) if e.status() == Some(404) => {
                st.items.clear();
                st.watermark = None;
                return Ok(false);
            }
            r => r?,
        };
        for item in found {
            let Some(idx) = item.index else {
                continue;
            };
            if st.watermark.is_none_or(|w| idx > w) {
                st.push(idx, item.data, None);
            }
        }
        st.synced = true;
        Ok(true)
    }
}

/// Half of `ttl` seconds; None for 0 (never expires).
pub fn renew_after(ttl: u64) -> Option<Duration> {
    (ttl > 0).then(|| Duration::from_millis(ttl.saturating_mul(500)))
}

/// Keeps a list under Sync's 20 writes/s (15/s).
async fn pace() {
    tokio::time::sleep(Duration::from_millis(1000 / 15)).await;
}
