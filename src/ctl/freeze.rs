//! `zkcoordctl freeze` / `unfreeze`: the incident switch (see [`crate::model::freeze`]). A
//! flag node per app (or `@all`), created and deleted from any machine; the daemons watch them.

use super::target::{author, fail, zk_fail, CtlError, Target};
use crate::exit;
use crate::model::freeze::{Freeze, ALL};
use crate::zk::identity::NodeKind;
use zookeeper_client as zk;

/// The flag's name for `app`, or for every app.
fn flag_name(app: Option<&str>, all: bool) -> Result<String, CtlError> {
    match (app, all) {
        (_, true) => Ok(ALL.to_string()),
        (Some(app), false) => {
            crate::model::layout::validate_app_name(app).map_err(|m| fail(exit::USAGE, format!("app: {m}")))?;
            Ok(app.to_string())
        }
        (None, false) => Err(fail(exit::USAGE, "name an app, or --all")),
    }
}

/// What the flag is called in what this prints.
fn scope(name: &str) -> String {
    if name == ALL { "every app".into() } else { name.to_string() }
}

/// Sets (freeze) or clears (unfreeze) the flag of `app` (or of every app).
pub async fn freeze(t: &Target, app: Option<&str>, all: bool, on: bool, message: Option<&str>) -> Result<(), CtlError> {
    let name = flag_name(app, all)?;
    let flag = t.layout.freeze(&name);
    let client = t.connect().await?;
    let refused = |e: zk::Error, what: &str| match crate::zk::identity::explain(&e, &flag, what) {
        Some(why) => fail(exit::NOPERM, why),
        None => zk_fail(e),
    };
    let said = if on {
        let reason = message.map(str::trim).filter(|m| !m.is_empty()).ok_or_else(|| fail(exit::USAGE, "say why with -m: publishers who are refused, status and every host's log show it"))?;
        if let Some(app) = app.filter(|_| !all) {
            // A typo freezes nothing anyone runs: say so, and set it anyway (the app may be new).
            let known = client.check_stat(&t.versions_path(app)).await.map_err(zk_fail)?.is_some()
                || client.check_stat(&t.layout.status(app)).await.map_err(zk_fail)?.is_some();
            if !known {
                eprintln!("zkcoordctl: warning: no application {app:?} is published or reported (no node {}); freezing it anyway, for when it is", t.versions_path(app));
            }
        }
        let f = Freeze { by: author(), reason: reason.chars().take(500).collect(), since: crate::clock::now_secs() };
        let data = serde_json::to_vec(&f).expect("freeze");
        // Each leader makes the parent; before any did, this does.
        match crate::zk::session::create_flag(&client, &flag, &data, &[&t.layout.freezes()], NodeKind::FreezeParent).await {
            Ok(_) => format!("froze {}: publishes are refused and hosts apply nothing new until `zkcoordctl unfreeze {}` ({flag})", scope(&name), unfreeze_arg(&name)),
            Err(zk::Error::NodeExists) => {
                let was = client.get_data(&flag).await.map(|(b, _)| Freeze::parse(&b)).map_err(zk_fail)?;
                format!("{} was already frozen by {}: {} ({flag})", scope(&name), was.by, was.reason)
            }
            Err(e) => return Err(refused(e, "create a freeze flag in")),
        }
    } else {
        let deleted = client.delete(&flag, None).await;
        // An app's own freeze does not lift the fleet-wide one: say so whichever way it went.
        let all = name != ALL && client.check_stat(&t.layout.freeze(ALL)).await.map_err(zk_fail)?.is_some();
        match deleted {
            Ok(()) if all => format!("unfroze {}, but every app is still frozen (`zkcoordctl unfreeze --all` lifts that)", scope(&name)),
            Ok(()) => format!("unfroze {}: publishes are accepted and hosts follow versions again", scope(&name)),
            Err(zk::Error::NoNode) if all => format!("{} was not frozen (every app still is: `zkcoordctl unfreeze --all` lifts that)", scope(&name)),
            Err(zk::Error::NoNode) => format!("{} was not frozen", scope(&name)),
            Err(e) => return Err(refused(e, "delete a freeze flag in")),
        }
    };
    crate::zk::session::close(client).await;
    println!("{said}");
    Ok(())
}

/// The argument `unfreeze` takes for flag `name`.
fn unfreeze_arg(name: &str) -> &str {
    if name == ALL { "--all" } else { name }
}
