//! The single leader's intake of plain publishes, in batches: requests that arrive together
//! (a burst of legacy triggers, say) are handled together, so a burst drains at the speed of
//! the ensemble rather than of one request's eight round trips.
//!
//! For one window of pending requests the leader
//! 1. reads every request node at once (the client pipelines them on one session);
//! 2. reads each app's versions, newest version, its metadata and rollout record once;
//! 3. decides in memory, in request order: content equal to the newest version (or to the
//!    previous request of the batch) is "unchanged", anything else a new version;
//! 4. creates the new versions in as few fenced multi-ops as the packet limit allows, and
//!    writes their metadata, every outcome and the request deletions in fenced multi-ops too.
//!
//! Requests whose rules differ go through [`Leader::handle_fetched`], one by one and in
//! their place in the order: chunked content, `--canary`, and signed requests (their dedupe
//! looks at the newest version's signer). With `leaders > 1` the agent does not batch at all.

use crate::zk::identity::NodeKind;
use crate::agent::leader::{Leader, MetaFor};
use crate::model::request::{validate_header, validate_inline};
use crate::zk::fence::AgentError;
use crate::model::layout::{self};
use crate::model::request::{self, Outcome, RequestHeader, VersionMeta};
use crate::agent::rollout::{PlainPublish, PublishPlan};
use std::collections::{BTreeSet, HashMap};
use zookeeper_client as zk;

/// Requests read and decided together. It bounds the leader's memory (requests are up to
/// 1 MB each) and how long one window's answers wait for the window's last write.
pub const MAX_BATCH_REQUESTS: usize = 32;

/// Payload bytes in one fenced multi-op. ZooKeeper drops the connection of a packet over
/// jute.maxbuffer (1 MiB by default), so a multi-op stays well under it; a single version
/// larger than this (up to `MAX_NODE_BYTES`) still goes alone in its own multi-op.
pub const MAX_MULTI_BYTES: usize = 512 * 1024;

/// What the batch does for one request.
// Short-lived, at most MAX_BATCH_REQUESTS of them: the size of the metadata does not matter.
#[allow(clippy::large_enum_variant)]
enum Plan {
    /// Answer without creating anything (rejected, or unchanged), maybe filling in the
    /// metadata of the version it equals.
    Answer(Outcome, MetaFor),
    /// Create a new version; the index is into [`Batch::creates`].
    Create(usize),
    /// Unchanged: equal to the version created for an earlier request of this batch.
    SameAs(usize),
}

/// A version to create.
struct NewVersion {
    app: String,
    /// The versions parent.
    parent: String,
    /// The metadata parent.
    meta_parent: String,
    /// Its name, `conf-<seq>`: the number a sequential create would get (see
    /// [`crate::agent::leader::next_version_seq`]).
    name: String,
    /// The version stream it goes into (see [`AppRead::stream`]).
    stream: i64,
    data: Vec<u8>,
    meta: VersionMeta,
    /// The rollout record's supersession, carried by the app's first new version.
    rollout: Option<PublishPlan>,
}

/// The newest version of an app, as this batch knows it.
enum Newest {
    /// A version that exists: its name, the sha256 of its content, whether it has metadata.
    Existing { name: String, sha256: Option<String>, has_meta: bool },
    /// The version an earlier request of this batch creates.
    Pending { create: usize, sha256: String },
}

/// What the batch read of one app, once.
struct AppRead {
    parent: String,
    meta_parent: String,
    /// The sequence number the next new version of this batch takes.
    next: u64,
    /// The version stream: the versions parent's czxid.
    stream: i64,
    newest: Option<Newest>,
    rollout: PlainPublish,
    /// The versions as listed, for the prune after the batch.
    children: Vec<String>,
}

impl AppRead {
    /// Reads the versions, the newest one's content and metadata and the rollout record:
    /// two round trips, and the parents created when missing (a missing versions parent
    /// begins a new version stream, see [`Leader::begin_stream`]).
    async fn read(leader: &Leader<'_>, app: &str) -> Result<AppRead, AgentError> {
        let client = leader.client;
        let layout = leader.config.layout();
        let parent = layout.versions(app);
        let meta_parent = layout.meta(app);
        let listed = match leader.list(app).await? {
            Some(l) => l,
            None => {
                leader.begin_stream(app).await?;
                // The old stream's record may be gone now: it is read again with the listing.
                leader.list(app).await?.ok_or(AgentError::Zk(zk::Error::NoNode))?
            }
        };
        let crate::zk::rollout::Listed { children, stat, record } = listed;
        let rollout = PlainPublish::of(app, record);
        let stream = stat.czxid;
        let next = crate::agent::leader::next_version_seq(&stat, &children);
        leader.ensure_meta_parent(app).await?;
        // The newest version this leadership created itself needs no reading back: its bytes'
        // sha256 is known, and its metadata went with it.
        let known = layout::newest_version(&children).and_then(|v| leader.known_sha256(app, stream, &v.name).map(|sum| (v.name, sum)));
        let newest = match layout::newest_version(&children) {
            None => None,
            Some(_) if known.is_some() => known.map(|(name, sum)| Newest::Existing { name, sha256: Some(sum), has_meta: true }),
            Some(v) => {
                let (data, meta) =
                    futures::join!(client.get_data(&format!("{parent}/{}", v.name)), client.get_data(&format!("{meta_parent}/{}", v.name)));
                let sha256 = match data {
                    Ok((bytes, _)) => Some(crate::model::content::content_sha256(&bytes)),
                    // Deleted meanwhile (by an operator): nothing can equal it.
                    Err(zk::Error::NoNode) => None,
                    Err(e) => return Err(e.into()),
                };
                // Metadata of an earlier stream counts as missing (it is replaced); garbled
                // metadata counts as present, as it always did: it is never overwritten.
                let has_meta = match meta {
                    Ok((m, stat)) => serde_json::from_slice::<VersionMeta>(&m).map_or(true, |m| m.belongs_to(stream, stat.czxid)),
                    Err(zk::Error::NoNode) => false,
                    Err(e) => return Err(e.into()),
                };
                Some(Newest::Existing { name: v.name, sha256, has_meta })
            }
        };
        Ok(AppRead { parent, meta_parent, next, stream, newest, rollout, children })
    }
}

/// One window's decisions, not yet written.
#[derive(Default)]
struct Batch {
    /// Request name and what to do, in request order.
    plans: Vec<(String, Plan)>,
    creates: Vec<NewVersion>,
    /// What the batch read of each app.
    apps: HashMap<String, AppRead>,
    /// Each decided request's publish id, for the lines that log its answer.
    ids: Ids,
}

/// Request name to publish id.
type Ids = HashMap<String, String>;

impl Batch {
    /// Decides a plain, valid inline request in memory against the newest version.
    async fn decide(&mut self, leader: &Leader<'_>, name: &str, h: RequestHeader, data: Vec<u8>) -> Result<(), AgentError> {
        let config = leader.config;
        if let Some(id) = &h.publish_id {
            self.ids.insert(name.to_string(), id.clone());
        }
        if let Some(reason) = leader.frozen(&h.app).await {
            self.plans.push((name.to_string(), Plan::Answer(Outcome::Rejected { reason }, None)));
            return Ok(());
        }
        if !self.apps.contains_key(&h.app) {
            let view = AppRead::read(leader, &h.app).await?;
            self.apps.insert(h.app.clone(), view);
        }
        let Some(view) = self.apps.get_mut(&h.app) else {
            return Err(AgentError::Zk(zk::Error::UnexpectedError(format!("no view of app {} in the batch", h.app))));
        };
        let meta = VersionMeta::of(&h, view.stream);
        let plan = match &mut view.newest {
            // A rollout holding the newest back is superseded only by a new version.
            Some(Newest::Existing { name, sha256: Some(sum), has_meta }) if *sum == h.sha256 && !view.rollout.holds_back => {
                // A leader that died between creating a version and answering leaves the
                // request behind; this answers it, and fills in the metadata if it is missing.
                let meta_for = (!*has_meta).then(|| (h.app.clone(), name.clone(), meta));
                *has_meta = true;
                Plan::Answer(Outcome::Unchanged { version: name.clone() }, meta_for)
            }
            Some(Newest::Pending { create, sha256 }) if *sha256 == h.sha256 => Plan::SameAs(*create),
            _ => {
                let index = self.creates.len();
                let rollout = Some(view.rollout.take(&config.layout()));
                let name = layout::VersionId::from_seq(view.next).name;
                view.next += 1;
                self.creates.push(NewVersion { app: h.app.clone(), parent: view.parent.clone(), meta_parent: view.meta_parent.clone(), name, stream: view.stream, data, meta, rollout });
                view.newest = Some(Newest::Pending { create: index, sha256: h.sha256.clone() });
                Plan::Create(index)
            }
        };
        self.plans.push((name.to_string(), plan));
        Ok(())
    }

    /// Writes everything decided so far: the new versions with their metadata, the outcomes
    /// and the request deletions, in one fenced multi-op when they fit in one (the publish's
    /// only write after the request itself); else, or when that multi-op meets a withdrawn
    /// request or a name taken meanwhile, the versions first and then the answers. Returns the
    /// apps that got a new version. The batch is empty afterwards, and forgets what it read
    /// (the next request reads afresh).
    async fn flush(&mut self, leader: &Leader<'_>) -> Result<BTreeSet<String>, AgentError> {
        let batch = std::mem::take(self);
        if batch.plans.is_empty() {
            return Ok(BTreeSet::new());
        }
        // The names are decided before anything is written: each the number a sequential
        // create would take.
        let answers: Vec<Answer> = batch
            .plans
            .into_iter()
            .map(|(req, plan)| match plan {
                Plan::Answer(outcome, meta_for) => (req, outcome, meta_for),
                // Its metadata goes with the version.
                Plan::Create(i) => (req, Outcome::Published { version: batch.creates[i].name.clone() }, None),
                Plan::SameAs(i) => (req, Outcome::Unchanged { version: batch.creates[i].name.clone() }, None),
            })
            .collect();
        let encoded = encode_answers(&answers)?;
        if !write_together(leader, &batch.creates, &answers, &encoded, &batch.ids).await? {
            create_versions(leader, &batch.creates).await?;
            write_answers(leader, &answers, &encoded, &batch.ids).await?;
        }
        for c in &batch.creates {
            leader.created(&c.app, c.stream, &c.name, &c.meta.sha256);
        }
        for (app, read) in &batch.apps {
            leader.listed_with(app, &read.children, batch.creates.iter().filter(|c| &c.app == app).map(|c| c.name.as_str()));
        }
        tracing::debug!(requests = answers.len(), created = batch.creates.len(), "batch of publish requests handled");
        Ok(batch.creates.into_iter().map(|c| c.app).collect())
    }
}

/// A request's answer: its name, its outcome, and metadata to fill in.
type Answer = (String, Outcome, MetaFor);

/// Each answer's outcome and metadata, encoded.
fn encode_answers(answers: &[Answer]) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>, zk::Error> {
    answers
        .iter()
        .map(|(_, outcome, meta_for)| {
            let outcome = serde_json::to_vec(outcome).map_err(|e| zk::Error::UnexpectedError(format!("cannot encode outcome: {e}")))?;
            let meta = match meta_for {
                Some((_, _, m)) => Some(serde_json::to_vec(m).map_err(|e| zk::Error::UnexpectedError(format!("cannot encode metadata: {e}")))?),
                None => None,
            };
            Ok((outcome, meta))
        })
        .collect()
}

/// Adds one answer to a multi-op: the metadata it fills in, its outcome, its request's deletion.
fn add_answer(w: &mut zk::CheckWriter<'_>, leader: &Leader<'_>, answer: &Answer, encoded: &(Vec<u8>, Option<Vec<u8>>)) -> Result<(), zk::Error> {
    let (req, outcome, meta_for) = answer;
    if let (Some((app, version, _)), Some(meta)) = (meta_for, &encoded.1) {
        let owned = crate::zk::identity::for_node(NodeKind::Owned);
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&owned));
        w.add_create(&format!("{}/{version}", leader.layout.meta(app)), meta, &persistent)?;
    }
    leader.add_reply(w, &crate::agent::leader::Reply { req, claimed: false }, outcome)
}

/// Logs and counts answers once they are written.
fn answered(leader: &Leader<'_>, answers: &[Answer], ids: &Ids) {
    for (req, outcome, _) in answers {
        let publish_id = ids.get(req).map_or("-", String::as_str);
        tracing::info!(request = %req, outcome = %outcome, publish_id, "publish request handled");
        // Counted once the outcome is written, as one by one.
        leader.metrics.publish_handled(outcome);
    }
}

/// Writes the whole window, versions and answers, in one fenced multi-op. False when it does
/// not fit in one, or the multi-op failed in a way [`create_versions`] and [`write_answers`]
/// know how to handle (metadata of an earlier stream, a withdrawn request, an outcome left by
/// an earlier attempt): nothing was written then, and they write it in steps.
async fn write_together(leader: &Leader<'_>, creates: &[NewVersion], answers: &[Answer], encoded: &[(Vec<u8>, Option<Vec<u8>>)], ids: &Ids) -> Result<bool, AgentError> {
    let Leader { client, fence, .. } = leader;
    let bytes: usize = creates.iter().map(|c| c.data.len() + 512).sum::<usize>() + encoded.iter().map(|(o, m)| o.len() + m.as_ref().map_or(0, Vec::len) + 256).sum::<usize>();
    if bytes > MAX_MULTI_BYTES || creates.len() * 3 + answers.len() * 3 > 1000 {
        return Ok(false);
    }
    let mut w = fence.writer(client)?;
    for c in creates {
        crate::agent::leader::add_version(&mut w, &c.parent, &c.meta_parent, &c.name, &c.data, &c.meta)?;
        if let Some(plan) = c.rollout.as_ref().filter(|p| p.has_op()) {
            plan.add_to(&mut w)?;
        }
    }
    for (answer, encoded) in answers.iter().zip(encoded) {
        add_answer(&mut w, leader, answer, encoded)?;
    }
    match fence.commit(w).await {
        Ok(_) => {
            answered(leader, answers, ids);
            Ok(true)
        }
        Err(AgentError::Zk(zk::Error::NoNode | zk::Error::NodeExists)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Handles one window of pending requests (in sequence order). Returns the apps that got a
/// new version.
pub(crate) async fn handle_batch(leader: &Leader<'_>, names: &[&str]) -> Result<BTreeSet<String>, AgentError> {
    let Leader { layout, client, .. } = leader;
    let paths: Vec<String> = names.iter().map(|name| format!("{}/{name}", layout.requests())).collect();
    let fetched = futures::future::join_all(paths.iter().map(|p| client.get_data(p))).await;
    let mut batch = Batch::default();
    let mut touched = BTreeSet::new();
    for (name, got) in names.iter().zip(fetched) {
        let bytes = match got {
            Ok((b, _)) => b,
            Err(zk::Error::NoNode) => continue, // withdrawn by its publisher
            Err(e) => return Err(e.into()),
        };
        // The header is checked first, whatever carries the bytes: its app name becomes znode paths.
        match request::decode(&bytes).and_then(|(h, d)| validate_header(&h).map(|_| (h, d))) {
            Err(reason) => batch.plans.push((name.to_string(), Plan::Answer(Outcome::Rejected { reason: reason.to_string() }, None))),
            Ok((h, _)) if h.content.is_chunked() || h.canary.is_some() || h.signature.is_some() => {
                // In its place in the order: what the batch decided so far lands first.
                touched.extend(batch.flush(leader).await?);
                if let Some(app) = leader.handle_fetched(name, &bytes, false).await? {
                    touched.insert(app);
                }
            }
            Ok((h, d)) => match validate_inline(&h, d) {
                Err(reason) => batch.plans.push((name.to_string(), Plan::Answer(Outcome::Rejected { reason: reason.to_string() }, None))),
                Ok(()) => {
                    let data = d.to_vec();
                    batch.decide(leader, name, h, data).await?;
                }
            },
        }
    }
    touched.extend(batch.flush(leader).await?);
    Ok(touched)
}

/// Splits `sizes` into consecutive runs of at most `MAX_MULTI_BYTES` (a larger item alone)
/// and `max_ops` items; returns the runs' index ranges.
fn runs(sizes: impl IntoIterator<Item = usize>, max_ops: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes, mut i) = (0, 0, 0);
    for size in sizes {
        if i > start && (bytes + size > MAX_MULTI_BYTES || i - start >= max_ops) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
        i += 1;
    }
    if i > start {
        out.push(start..i);
    }
    out
}

/// Creates the versions, each with its metadata (see [`crate::agent::leader::add_version`]),
/// in fenced multi-ops, each app's rollout supersession with its first version. A name a plain client took meanwhile fails its multi-op
/// (NodeExists): the leader then reads again and handles the requests anew.
async fn create_versions(leader: &Leader<'_>, creates: &[NewVersion]) -> Result<(), AgentError> {
    let Leader { client, fence, .. } = leader;
    for run in runs(creates.iter().map(|c| c.data.len() + 512), 1000) {
        for attempt in 0..2 {
            let mut w = fence.writer(client)?;
            for c in &creates[run.clone()] {
                crate::agent::leader::add_version(&mut w, &c.parent, &c.meta_parent, &c.name, &c.data, &c.meta)?;
                if let Some(plan) = c.rollout.as_ref().filter(|p| p.has_op()) {
                    plan.add_to(&mut w)?;
                }
            }
            match fence.commit(w).await {
                Ok(_) => break,
                // Metadata an earlier stream left under one of these names: removed, tried again.
                Err(AgentError::Zk(zk::Error::NodeExists)) if attempt == 0 => {
                    let mut cleared = false;
                    for c in &creates[run.clone()] {
                        cleared |= leader.clear_stale_meta(&c.app, &c.name).await?;
                    }
                    if !cleared {
                        return Err(AgentError::Zk(zk::Error::NodeExists));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Writes metadata, outcomes and request deletions in fenced multi-ops. A multi-op that fails
/// because a request was withdrawn meanwhile, or an outcome already exists (an earlier attempt
/// whose answer was lost), is written again one request at a time by [`Leader::finish`], which
/// knows what to do in either case.
async fn write_answers(leader: &Leader<'_>, answers: &[Answer], encoded: &[(Vec<u8>, Option<Vec<u8>>)], ids: &Ids) -> Result<(), AgentError> {
    let Leader { client, fence, .. } = leader;
    let sizes = encoded.iter().map(|(o, m)| o.len() + m.as_ref().map_or(0, Vec::len) + 256);
    for run in runs(sizes, 300) {
        let mut w = fence.writer(client)?;
        for (answer, encoded) in answers[run.clone()].iter().zip(&encoded[run.clone()]) {
            add_answer(&mut w, leader, answer, encoded)?;
        }
        match fence.commit(w).await {
            Ok(_) => {}
            Err(AgentError::Zk(zk::Error::NoNode | zk::Error::NodeExists)) => {
                for (req, outcome, meta_for) in &answers[run.clone()] {
                    leader.finish(req, outcome, meta_for.clone(), false).await?;
                }
            }
            Err(e) => return Err(e),
        }
        answered(leader, &answers[run], ids);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_ops_stay_under_the_byte_budget_and_a_large_item_goes_alone() {
        let k = 1024;
        assert_eq!(runs([100 * k; 5], 1000), vec![0..5]);
        assert_eq!(runs([200 * k; 5], 1000), vec![0..2, 2..4, 4..5]);
        assert_eq!(runs([10, 900 * k, 10], 1000), vec![0..1, 1..2, 2..3]);
        assert_eq!(runs([1; 7], 3), vec![0..3, 3..6, 6..7]);
        assert!(runs(std::iter::empty(), 3).is_empty());
    }
}
