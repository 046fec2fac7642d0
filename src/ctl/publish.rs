//! Publishing from the operator's side: a request answered by the leading agent, and with
//! `--wait` the rollout, followed host by host until every live host reports the version or
//! a failure.

use super::target::{author, fail, zk_fail, CtlError, Target};
use super::PublishOptions;
use crate::model::content::ContentInfo;
use crate::exit;
use crate::model::layout::VersionId;
use crate::model::request::{self, Outcome};
use crate::zk::request::AwaitError;
use crate::model::signing;
use crate::model::status::{ApplyResult, StatusReport};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::pin::Pin;
use std::time::Duration;
use zookeeper_client as zk;

/// Reads a file (or stdin for `-`), at most one byte past the size limit so a huge file is
/// refused without reading it all; a directory is packed as a bundle ([`crate::host::bundle`]).
pub fn read_input(file: &str, max: u64) -> Result<(Vec<u8>, ContentInfo), CtlError> {
    if file != "-" && std::path::Path::new(file).is_dir() {
        let p = crate::host::bundle::pack(std::path::Path::new(file), max).map_err(|e| fail(exit::DATAERR, format!("not published: {e}")))?;
        return Ok((p.bytes, p.content));
    }
    let limit = max + 1;
    let mut data = Vec::new();
    let res = if file == "-" {
        std::io::stdin().take(limit).read_to_end(&mut data)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut data))
    };
    res.map_err(|e| fail(exit::DATAERR, format!("cannot read {file}: {e}")))?;
    if data.len() as u64 > max {
        // The read stopped one byte past the limit: a file's size is known, stdin's is not.
        let size = match std::fs::metadata(file) {
            Ok(m) if file != "-" => format!("{} bytes", m.len()),
            _ => format!("over {max} bytes"),
        };
        return Err(fail(
            exit::DATAERR,
            format!("not published: config is {size}; the limit is {max} bytes (max_config_size = {})", crate::model::content::human(max)),
        ));
    }
    Ok((data, ContentInfo::default()))
}

/// Why empty content is not published without `--allow-empty`: from standard input it is
/// most often a generator that failed (its exit status never reaches us), and every host
/// would install an empty file and report ok.
pub fn empty_refusal(file: &str) -> String {
    if file == "-" {
        "not published: standard input was empty (did the command writing it fail? `set -o pipefail` makes the shell say so); pass --allow-empty to publish an empty file".into()
    } else {
        format!("not published: {file} is empty; pass --allow-empty to publish an empty file")
    }
}

/// Publishes `data` as the newest version of `app`, then optionally waits for the rollout.
/// `content` says whether `data` is a bundle; data beyond one node goes as chunks first.
/// `carried` is an earlier version's signature, kept when no `--sign-key` is given (a rollback
/// of signed bytes stays installable where signatures are required).
pub async fn publish(
    t: &Target,
    app: &str,
    data: Vec<u8>,
    content: ContentInfo,
    opts: PublishOptions,
    carried: Option<signing::VersionSignature>,
) -> Result<(), CtlError> {
    let PublishOptions { message, timeout, wait, sign_key, sign_valid, canary, waves, soak, gate, precheck, json } = opts;
    // Everything checkable is checked before anything reaches ZooKeeper.
    let (mut header, body) = crate::zk::blobs::prepare(app, &author(), message, &data, content, t.max_config_size())
        .map_err(|e| fail(exit::DATAERR, format!("not published: {e}")))?;
    if let Some(path) = &sign_key {
        let key = signing::load_signing_key(path).map_err(|e| fail(exit::NOPERM, format!("not published: {e}")))?;
        header.signature = Some(signing::sign(&key, app, &header.sha256, header.size, sign_valid));
    } else {
        header.signature = carried.filter(|s| signing::check(s, app, &header.sha256, header.size).is_ok());
    }
    header.canary = crate::model::rollout::canary_spec(canary.as_deref(), waves.as_deref(), soak, gate.as_deref(), precheck).map_err(|e| fail(exit::USAGE, e))?;
    let staged = header.canary.is_some();
    let client = t.connect().await?;
    if header.content.is_chunked() {
        crate::zk::blobs::upload(&client, &t.layout, app, &header.sha256, &data).await.map_err(|e| {
            match crate::zk::identity::explain(&e, &t.layout.blobs(), "create chunks of a large config in") {
                Some(why) => fail(exit::NOPERM, why),
                None => zk_fail(e),
            }
        })?;
    }
    let refused = |e: zk::Error| match crate::zk::identity::explain(&e, &t.layout.requests(), "create a publish request in") {
        Some(why) => fail(exit::NOPERM, why),
        None => zk_fail(e),
    };
    // Parents this publish makes itself go again if no agent ever answers: a tree with no agent
    // keeps nothing of a publish that could not happen.
    let (req, made) = crate::zk::request::submit(&client, &t.layout, &header, body).await.map_err(refused)?;
    let outcome = match crate::zk::request::await_outcome(&client, &t.layout, &req, timeout).await {
        Ok(o) => o,
        Err(e @ AwaitError::NoLeader(_)) => {
            for p in &made {
                // Only when empty: an agent that came meanwhile may be using it.
                let _ = client.delete(p, None).await;
            }
            return Err(fail(exit::TEMPFAIL, e.to_string()));
        }
        Err(AwaitError::Zk(e)) => return Err(zk_fail(e)),
        Err(e) => return Err(fail(exit::SOFTWARE, e.to_string())),
    };
    let publish_id = header.publish_id.clone().unwrap_or_default();
    if !json {
        println!("{outcome}");
        if matches!(outcome, Outcome::Published { .. }) {
            // Beside the answer, not in it: scripts read the one line above.
            eprintln!("publish id {publish_id} (every host's journal: journalctl ZKCOORD_PUBLISH_ID={publish_id})");
        }
    }
    // Content equal to the newest version stages nothing.
    let staged = staged && matches!(outcome, Outcome::Published { .. });
    if staged && !super::rollout::announce(&client, t, app, precheck, waves.is_some()).await {
        let asked = if precheck { "--precheck" } else if waves.is_some() { "--waves" } else { "--canary" };
        return Err(fail(
            exit::SOFTWARE,
            format!("{outcome} went to every host, not staged: the leading agent has no rollout record for it as asked (an agent older than staged rollouts, waves or prechecks ignores {asked}, or a newer publish superseded it)"),
        ));
    }
    if let (Some(_), Outcome::Published { version }) = (&sign_key, &outcome) {
        // An agent older than signed versions drops the signature; hosts with trusted_keys
        // would then refuse the version, so say it here rather than let the rollout stall.
        let signed = match client.get_data(&format!("{}/{version}", t.layout.meta(app))).await {
            Ok((m, _)) => serde_json::from_slice::<request::VersionMeta>(&m).map(|m| m.signature.is_some()).unwrap_or(false),
            Err(_) => true,
        };
        if !signed {
            return Err(fail(exit::SOFTWARE, format!("{version} was published without its signature (the leading agent is older than signed versions); hosts with trusted_keys will refuse it")));
        }
    }
    let mut report = json.then(|| outcome_json(app, &outcome, &publish_id));
    let version = match outcome {
        Outcome::Rejected { .. } => {
            print_json(report);
            return Err(fail(exit::DATAERR, String::new()));
        }
        Outcome::Published { version } | Outcome::Unchanged { version } => version,
    };
    let result = match wait {
        None => Ok(()),
        Some(limit) => {
            let v = VersionId::parse(&version).ok_or_else(|| fail(exit::SOFTWARE, format!("odd version name {version}")))?;
            let limit = if staged { super::rollout::wait_decided(&client, t, app, &version, limit).await? } else { limit };
            // The version's stream: a host that runs a larger sequence number of an earlier
            // stream (the app's node was re-created since) has not applied this one.
            let stream = client.check_stat(&t.layout.versions(app)).await.map_err(zk_fail)?.map(|s| s.czxid);
            wait_rollout(&client, t, app, &Wanted { version: v, stream }, limit, report.as_mut()).await
        }
    };
    print_json(report);
    result
}

/// `{"app": …, "outcome": "published", "version": "conf-0000000012", "publish_id": …}` (or `"reason"` for a
/// rejection): what `--json` prints, completed by the rollout's result with `--wait`.
fn outcome_json(app: &str, outcome: &Outcome, publish_id: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut o = serde_json::Map::new();
    o.insert("app".into(), app.into());
    let (word, key, value) = match outcome {
        Outcome::Published { version } => ("published", "version", version),
        Outcome::Unchanged { version } => ("unchanged", "version", version),
        Outcome::Rejected { reason } => ("rejected", "reason", reason),
    };
    o.insert("outcome".into(), word.into());
    o.insert(key.into(), value.clone().into());
    // Only a version this publish made carries its id.
    if matches!(outcome, Outcome::Published { .. }) {
        o.insert("publish_id".into(), publish_id.into());
    }
    o
}

/// Prints the `--json` object, if there is one, as one line.
fn print_json(report: Option<serde_json::Map<String, serde_json::Value>>) {
    if let Some(r) = report {
        println!("{}", serde_json::Value::Object(r));
    }
}

/// The rollout's end for `--json`: `result` (applied, failed, timeout, no-hosts) and each
/// host's state (applied, failed with result and error, pending, untrusted with why).
fn rollout_json(result: &str, hosts: &BTreeMap<String, HostProgress>) -> serde_json::Value {
    let hosts: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .map(|(host, p)| {
            let v = match p {
                HostProgress::Applied => serde_json::json!({"state": "applied"}),
                HostProgress::Pending => serde_json::json!({"state": "pending"}),
                HostProgress::Failed(result, error) => serde_json::json!({"state": "failed", "result": result, "error": error}),
                HostProgress::Untrusted(why) => serde_json::json!({"state": "untrusted", "error": why}),
                HostProgress::Held(why) => serde_json::json!({"state": "held", "error": why}),
            };
            (host.clone(), v)
        })
        .collect();
    let applied = hosts.values().filter(|h| h["state"] == "applied").count();
    serde_json::json!({"result": result, "applied": applied, "hosts": hosts})
}

/// Publishes an earlier version's bytes as a new version, saying so in the message.
pub async fn rollback(t: &Target, app: &str, to: &str, opts: PublishOptions) -> Result<(), CtlError> {
    let client = t.connect().await?;
    let v = t.resolve_version(&client, app, Some(to)).await?;
    let bytes = t.bytes_of(&client, app, &v).await?;
    // A bundle stays a bundle, and signed bytes stay signed: take kind, compression and the
    // signature from the old version's metadata.
    let meta_of = |name: String| {
        let client = &client;
        let path = format!("{}/{name}", t.layout.meta(app));
        async move {
            match client.get_data(&path).await {
                Ok((m, _)) => serde_json::from_slice::<request::VersionMeta>(&m).ok(),
                Err(_) => None,
            }
        }
    };
    let old_meta = meta_of(v.name.clone()).await;
    let carried = old_meta.as_ref().and_then(|m| m.signature.clone()).filter(|_| opts.sign_key.is_none());
    if let Some(old) = &carried {
        let at = |ms: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string();
        if let Err(e) = signing::check(old, app, &old_meta.as_ref().map(|m| m.sha256.clone()).unwrap_or_default(), old_meta.as_ref().map_or(0, |m| m.size)) {
            return Err(fail(exit::USAGE, format!("not published: {}'s signature no longer counts ({e}); add --sign-key KEY to sign the rollback afresh", v.name)));
        }
        // Hosts with trusted_keys refuse a signature made before the one they run (a replay):
        // carrying it would publish a version no such host installs. Any later signed version
        // may be what they run (the newest may be unsigned, or refused).
        let later: Vec<VersionId> = t.versions(&client, app).await?.into_iter().filter(|x| x.seq > v.seq).collect();
        let metas = futures::future::join_all(later.iter().map(|x| meta_of(x.name.clone()))).await;
        let newer = later.into_iter().zip(metas).filter_map(|(x, m)| m.and_then(|m| m.signature).map(|s| (x.name, s.issued()))).rfind(|(_, at)| *at > old.issued());
        if let Some((name, issued)) = newer {
            return Err(fail(
                exit::USAGE,
                format!(
                    "not published: {}'s signature (made {}) is older than {name}'s ({}), so hosts with trusted_keys would refuse it as a replay; add --sign-key KEY to sign the rollback afresh",
                    v.name,
                    at(old.issued()),
                    at(issued)
                ),
            ));
        }
    }
    let content = old_meta.map(|m| ContentInfo { storage: None, chunks: None, ..m.content }).unwrap_or_default();
    drop(client);
    let note = match &opts.message {
        Some(m) => format!("rollback to {}: {m}", v.name),
        None => format!("rollback to {}", v.name),
    };
    publish(t, app, bytes, content, PublishOptions { message: Some(note), ..opts }, carried).await
}

/// `zkcoordctl key generate`: a new key pair, the private half never overwriting a file.
pub fn generate_key(path: &std::path::Path) -> Result<(), CtlError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (private, public) = signing::generate();
    let public_path = std::path::PathBuf::from(format!("{}.pub", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| fail(exit::CANTCREAT, format!("cannot create {}: {e}", path.display())))?;
    f.write_all(private.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| fail(exit::IOERR, format!("cannot write {}: {e}", path.display())))?;
    std::fs::write(&public_path, &public).map_err(|e| fail(exit::CANTCREAT, format!("cannot write {}: {e}", public_path.display())))?;
    eprintln!("private key: {} (mode 0600; keep it with the publishers)", path.display());
    eprintln!("public key:  {} (list it in the apps' trusted_keys)", public_path.display());
    print!("{public}");
    Ok(())
}

/// Where one host stands in a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostProgress {
    /// Runs the version (or a newer one).
    Applied,
    /// Tried the version and failed: result and error.
    Failed(String, String),
    /// Not there yet (or no report yet).
    Pending,
    /// Its status node was written by another identity: not counted, not waited for.
    Untrusted(String),
    /// Holds a hand edit (`on_drift = "hold"`) and applies nothing new until it ends: not
    /// waited for, since no time will bring the version; the drift's description.
    Held(String),
}

fn seq(name: Option<&str>) -> Option<u64> {
    name.and_then(VersionId::parse).map(|v| v.seq)
}

/// The version `--wait` waits for, and the version stream it belongs to.
#[derive(Debug, Clone)]
struct Wanted {
    /// The version.
    version: VersionId,
    /// The versions parent's czxid when the publish was answered (None: it is gone).
    stream: Option<i64>,
}

fn progress_of(report: Option<&StatusReport>, wanted: &Wanted) -> HostProgress {
    let Some(r) = report else { return HostProgress::Pending };
    let target = &wanted.version;
    // A host that says which stream it runs is compared within that stream only; a host older
    // than streams is compared by sequence number, as before.
    let same_stream = match (r.stream, wanted.stream) {
        (Some(host), Some(want)) => host == want,
        _ => true,
    };
    if same_stream && seq(r.version.as_deref()).is_some_and(|s| s >= target.seq) {
        return HostProgress::Applied;
    }
    if let Some(d) = r.drift.as_ref().filter(|d| d.held()) {
        return HostProgress::Held(d.describe());
    }
    let failed = matches!(r.result, ApplyResult::CheckFailed | ApplyResult::ReloadFailed | ApplyResult::Error | ApplyResult::Rejected);
    if failed && seq(r.attempted.as_deref()).is_some_and(|s| s >= target.seq) {
        let result = serde_json::to_value(r.result).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let error = r.error.clone().unwrap_or_default();
        return HostProgress::Failed(result, crate::model::status::reason(&error).to_string());
    }
    HostProgress::Pending
}

/// `3/4 applied, 1 check-failed on web-07: nginx: [emerg] unknown directive "servr"`.
fn summary_line(hosts: &BTreeMap<String, HostProgress>) -> String {
    let applied = hosts.values().filter(|p| **p == HostProgress::Applied).count();
    let counted = hosts.values().filter(|p| !matches!(p, HostProgress::Untrusted(_))).count();
    let mut line = format!("{applied}/{counted} applied");
    for (host, p) in hosts {
        if let HostProgress::Untrusted(why) = p {
            line.push_str(&format!(", {host} not counted ({why})"));
        }
    }
    for (host, p) in hosts {
        if let HostProgress::Failed(result, error) = p {
            line.push_str(&format!(", 1 {result} on {host}: {error}"));
        }
    }
    for (host, p) in hosts {
        if let HostProgress::Held(why) = p {
            line.push_str(&format!(", {host} {why}"));
        }
    }
    let pending = hosts.values().filter(|p| **p == HostProgress::Pending).count();
    if pending > 0 {
        line.push_str(&format!(", {pending} pending"));
    }
    line
}

type HostWatch = Pin<Box<dyn std::future::Future<Output = String> + Send>>;

/// Follows every live host of `app` until each reports `target` or a failure, or `limit` passes.
/// With `json`, prints nothing and puts the end (as [`rollout_json`]) under its `"wait"` key.
async fn wait_rollout(
    client: &zk::Client,
    t: &Target,
    app: &str,
    target: &Wanted,
    limit: Duration,
    mut json: Option<&mut serde_json::Map<String, serde_json::Value>>,
) -> Result<(), CtlError> {
    let dir = t.layout.status(app);
    let deadline = tokio::time::Instant::now() + limit;
    let mut progress: BTreeMap<String, HostProgress> = BTreeMap::new();
    let mut watches: FuturesUnordered<HostWatch> = FuturesUnordered::new();
    let quiet = json.is_some();
    let mut finish = |result: &str, hosts: &BTreeMap<String, HostProgress>| {
        if let Some(j) = json.as_deref_mut() {
            j.insert("wait".into(), rollout_json(result, hosts));
        }
    };
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} applied {msg}").expect("template"));
        b
    });
    let mut last_line = String::new();
    loop {
        // Hosts come and go: re-list with a watch, read newcomers.
        let (hosts, children) = match client.get_and_watch_children(&dir).await {
            Ok((c, _, w)) => (c, Some(w)),
            Err(zk::Error::NoNode) => (Vec::new(), None),
            Err(e) => return Err(zk_fail(e)),
        };
        progress.retain(|h, _| hosts.contains(h));
        for host in hosts.iter().filter(|h| !progress.contains_key(*h)).cloned().collect::<Vec<_>>() {
            if let Some((p, w)) = read_host(client, &dir, &host, target).await? {
                progress.insert(host, p);
                watches.push(w);
            }
        }
        if progress.is_empty() {
            if !quiet {
                println!("no live host reports {app}; nothing to wait for");
            }
            finish("no-hosts", &progress);
            return Ok(());
        }
        let mut children_changed = Box::pin(async move {
            match children {
                Some(w) => {
                    w.changed().await;
                }
                None => std::future::pending::<()>().await,
            }
        });
        loop {
            let line = summary_line(&progress);
            if line != last_line {
                match &bar {
                    Some(b) => {
                        b.set_length(progress.len() as u64);
                        b.set_position(progress.values().filter(|p| **p == HostProgress::Applied).count() as u64);
                        b.set_message(line.split_once(" applied").map(|(_, rest)| rest.trim_start_matches(", ").to_string()).unwrap_or_default());
                    }
                    None if !quiet => println!("{line}"),
                    None => {}
                }
                last_line = line;
            }
            if progress.values().all(|p| *p != HostProgress::Pending) {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                    println!("{last_line}");
                }
                let failed = progress.values().filter(|p| matches!(p, HostProgress::Failed(..))).count();
                let held = progress.values().filter(|p| matches!(p, HostProgress::Held(_))).count();
                let result = match (failed, held) {
                    (0, 0) => "applied",
                    (0, _) => "held",
                    _ => "failed",
                };
                finish(result, &progress);
                return if result == "applied" { Ok(()) } else { Err(fail(1, String::new())) };
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some(b) = &bar {
                        b.abandon();
                    }
                    finish("timeout", &progress);
                    let waiting: Vec<&str> = progress.iter().filter(|(_, p)| **p == HostProgress::Pending).map(|(h, _)| h.as_str()).collect();
                    return Err(fail(exit::TEMPFAIL, format!(
                        "timed out after {}: {last_line}; still waiting for {}",
                        humantime::format_duration(limit),
                        waiting.join(", ")
                    )));
                }
                _ = &mut children_changed => break,
                Some(host) = watches.next() => {
                    if progress.contains_key(&host) {
                        match read_host(client, &dir, &host, target).await? {
                            Some((p, w)) => {
                                progress.insert(host, p);
                                watches.push(w);
                            }
                            None => {
                                progress.remove(&host);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One host's progress and a watch on its report; None when the host is gone.
async fn read_host(client: &zk::Client, dir: &str, host: &str, target: &Wanted) -> Result<Option<(HostProgress, HostWatch)>, CtlError> {
    match client.get_and_watch_data(&format!("{dir}/{host}")).await {
        Ok((data, stat, w)) => {
            let report: Option<StatusReport> = serde_json::from_slice(&data).ok();
            if report.as_ref().is_some_and(|r| r.result == ApplyResult::Removed) {
                return Ok(None);
            }
            let trust = crate::zk::guard::status_trusted(client, &format!("{dir}/{host}"), host, stat.czxid).await.map_err(zk_fail)?;
            let name = host.to_string();
            let watch: HostWatch = Box::pin(async move {
                w.changed().await;
                name
            });
            let progress = match trust {
                Ok(()) => progress_of(report.as_ref(), target),
                Err(why) => HostProgress::Untrusted(why.to_string()),
            };
            Ok(Some((progress, watch)))
        }
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(zk_fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(version: Option<&str>, result: ApplyResult, attempted: Option<&str>, error: Option<&str>) -> StatusReport {
        StatusReport {
            host: "h".into(),
            pid: 1,
            app: "a".into(),
            version: version.map(String::from),
            sha256: None,
            result,
            attempted: attempted.map(String::from),
            error: error.map(String::from),
            time: 0,
            stream: None,
            drift: None,
            publish_id: None,
            frozen: None,
            precheck: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn a_held_host_is_not_waited_for_and_says_why() {
        let wanted = Wanted { version: VersionId::parse("conf-0000000002").unwrap(), stream: None };
        let mut r = report(Some("conf-0000000001"), ApplyResult::Ok, Some("conf-0000000002"), Some("held: /x edited by hand"));
        r.drift = Some(crate::model::drift::Drift {
            dest: "/x".into(),
            sha256: "ab".repeat(32),
            summary: "+1 -0 lines".into(),
            lines: Vec::new(),
            action: crate::model::drift::OnDrift::Hold,
            since: 0,
        });
        let p = progress_of(Some(&r), &wanted);
        assert!(matches!(&p, HostProgress::Held(why) if why.starts_with("held: /x edited by hand (+1 -0 lines")), "{p:?}");
        let hosts = BTreeMap::from([("h".to_string(), p)]);
        assert_eq!(rollout_json("held", &hosts)["hosts"]["h"]["state"], "held");
        assert!(summary_line(&hosts).starts_with("0/1 applied, h held: /x"), "{}", summary_line(&hosts));
        // Once the host runs the version, the drift no longer matters to the wait.
        r.version = Some("conf-0000000002".into());
        assert_eq!(progress_of(Some(&r), &wanted), HostProgress::Applied);
    }

    #[test]
    fn a_host_on_an_earlier_stream_has_not_applied_a_version_of_the_new_one() {
        let t = Wanted { version: VersionId::from_seq(0), stream: Some(900) };
        let mut old = report(Some("conf-0000000006"), ApplyResult::Ok, None, None);
        old.stream = Some(100);
        assert_eq!(progress_of(Some(&old), &t), HostProgress::Pending);
        let mut new = report(Some("conf-0000000000"), ApplyResult::Ok, None, None);
        new.stream = Some(900);
        assert_eq!(progress_of(Some(&new), &t), HostProgress::Applied);
        // A host older than streams is judged by sequence number.
        assert_eq!(progress_of(Some(&report(Some("conf-0000000006"), ApplyResult::Ok, None, None)), &t), HostProgress::Applied);
    }

    #[test]
    fn hosts_are_applied_failed_or_pending_relative_to_the_target() {
        let t = Wanted { version: VersionId::from_seq(12), stream: None };
        assert_eq!(progress_of(Some(&report(Some("conf-0000000012"), ApplyResult::Ok, None, None)), &t), HostProgress::Applied);
        assert_eq!(progress_of(Some(&report(Some("conf-0000000013"), ApplyResult::Ok, None, None)), &t), HostProgress::Applied);
        assert_eq!(progress_of(Some(&report(Some("conf-0000000011"), ApplyResult::Ok, None, None)), &t), HostProgress::Pending);
        assert_eq!(
            progress_of(Some(&report(Some("conf-0000000011"), ApplyResult::CheckFailed, Some("conf-0000000012"), Some("check `nginx -t` exited with status 1\nnginx: [notice] signal process started\nnginx: [emerg] bad\nmore"))), &t),
            HostProgress::Failed("check-failed".into(), "nginx: [emerg] bad".into())
        );
        assert_eq!(progress_of(None, &t), HostProgress::Pending);
    }

    #[test]
    fn the_summary_reads_as_the_operator_expects() {
        let mut m = BTreeMap::new();
        for h in ["web-01", "web-02", "web-03"] {
            m.insert(h.to_string(), HostProgress::Applied);
        }
        m.insert("web-07".into(), HostProgress::Failed("check-failed".into(), "nginx: [emerg] unknown directive \"servr\"".into()));
        assert_eq!(summary_line(&m), "3/4 applied, 1 check-failed on web-07: nginx: [emerg] unknown directive \"servr\"");
    }
}
