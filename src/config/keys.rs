//! Every configuration key, its default and its meaning, in one table: the README's
//! "Configuration, key by key" table and the `zkcoord.toml(5)` man page are both rendered from
//! it ([`markdown_table`], [`man_page`]), so the two cannot drift apart (a test compares the
//! README with [`markdown_table`]; `cargo run --example gen-manpages -- --update-readme` rewrites
//! it).

/// One row of the table. Text is Markdown: `code` in backticks, nothing else.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key as written in the file, with its section, e.g. "`[zookeeper] hosts`".
    pub key: &'static str,
    /// What applies when the key is absent.
    pub default: &'static str,
    /// What it does and what it accepts.
    pub meaning: &'static str,
}

/// The README's markers around the generated table.
pub const README_BEGIN: &str = "<!-- config-keys: generated from src/config/keys.rs; edit there -->";
/// The end marker.
pub const README_END: &str = "<!-- /config-keys -->";

/// Every key, in the order the README shows them.
pub const KEYS: &[Key] = &[
    Key { key: "`role`", default: "required", meaning: "`\"agent\"`, `\"app\"` or `\"both\"`" },
    Key { key: "`node_id`", default: "host name", meaning: "this host's name in registrations and status nodes" },
    Key { key: "`labels`", default: "none", meaning: "this host's labels, e.g. `{ dc = \"fra\", rack = \"r12\" }`: shown in its status nodes, named by `publish --waves dc=fra,dc=ams,*`" },
    Key { key: "`state_dir`", default: "`/var/lib/zkcoord`", meaning: "where applied versions are remembered (`<app>.json`)" },
    Key { key: "`[http] listen`", default: "absent (off)", meaning: "address for `/healthz` and `/metrics`, e.g. `\"127.0.0.1:9877\"`" },
    Key { key: "`resync_interval`", default: "`\"5m\"`", meaning: "every app's periodic pass, ±20% jitter: sync, re-read the newest version, compare the destination's sha256 (see `on_drift`), re-check our ephemeral nodes, re-arm the watches; at least `\"1s\"`; `\"off\"` or `0` disables it" },
    Key { key: "`log_level`", default: "`\"info\"`", meaning: "log filter, e.g. `\"zkcoord=debug,info\"`; changes on reload; `ZKCOORD_LOG`/`RUST_LOG` override it" },
    Key { key: "`log_format`", default: "journal under systemd, else text", meaning: "`\"text\"`, `\"json\"` (one object per line, the journal's fields) or `\"journal\"`; needs a restart" },
    Key { key: "`dropin_dir`", default: "`zkcoord.d` beside the file", meaning: "directory of drop-in `*.toml` files merged after this file in name order (main file only); see Drop-ins" },
    Key { key: "`[zookeeper] hosts`", default: "required", meaning: "`host:port,...`, optionally ending with a chroot `/path`; daemons (and `acl init`) create a missing chroot when their identity may, else STATUS and `/healthz` say `the chroot /path does not exist; create it or change hosts` and they keep trying" },
    Key { key: "`[zookeeper] session_timeout`", default: "`\"10s\"`", meaning: "asked of the server, which negotiates it within its bounds" },
    Key { key: "`[zookeeper] start_timeout`", default: "`\"30s\"`", meaning: "READY goes to systemd after the first sync or after this" },
    Key { key: "`[zookeeper] root`", default: "`/zkcoord`", meaning: "our own state: requests, claims, outcomes, metadata, status" },
    Key { key: "`[zookeeper] applications`", default: "`/applications`", meaning: "parent of every app's versions" },
    Key { key: "`[agent] election_path`", default: "`/roles/workers`", meaning: "parent of the agents' election nodes" },
    Key { key: "`[agent] leaders`", default: "`1`", meaning: "how many agents lead at once" },
    Key { key: "`[agent] outcome_ttl`", default: "`\"5m\"`", meaning: "how long a publish's answer stays for its publisher to read; older ones are removed once a minute (or at the pace of `outcome_ttl`, if shorter)" },
    Key { key: "`[agent] gates`", default: "none", meaning: "named gate commands, e.g. `{ errors = [\"/usr/local/bin/5xx-ok\", \"{canaries}\"] }`: run by the leader after a canary soak, before promotion; a non-zero exit aborts. `--gate NAME` picks one; a gate named after an app runs for all its canary rollouts. Placeholders `{app}`, `{version}`, `{previous}`, `{canaries}`" },
    Key { key: "`[agent] gate_timeout`", default: "`\"1m\"`", meaning: "how long a gate may run; past it the gate is killed and the rollout aborted" },
    Key { key: "`[agent] keep_versions`", default: "`100`", meaning: "versions kept per app; older ones (and their metadata) are pruned" },
    Key { key: "`[agent] trigger_listen`", default: "absent (off)", meaning: "address of the legacy `add|<data>` listener, e.g. `\"127.0.0.1:8877\"`" },
    Key { key: "`[agent] trigger_app`", default: "none", meaning: "the app that trigger data becomes a version of (required with `trigger_listen`)" },
    Key { key: "`[agent] trigger_max_connections`", default: "`64`", meaning: "connections handled at once; more wait, unaccepted, in the listen backlog (1,024)" },
    Key { key: "`[[app]] name`", default: "required", meaning: "letters, digits, `-`, `_`, `.`; at most 128 characters; not `.` or `..`" },
    Key { key: "`[[app]] path`", default: "`<applications>/<name>`", meaning: "the znode holding this app's versions" },
    Key { key: "`[[app]] dest`", default: "required", meaning: "absolute path of the file to keep current; its directory must exist" },
    Key { key: "`[[app]] mode`", default: "the existing file's mode; `\"0644\"` for a new file", meaning: "file mode, an octal string; when set it wins over the existing file's" },
    Key { key: "`[[app]] reload_group`", default: "none", meaning: "the `[reload_group.<name>]` this app goes with: its own `check` still runs on its staged file; the group's check, reload and verify run once for every member changed within the group's quiet window, and a failure puts every member's previous file back. A member sets no `reload` or `verify` of its own; bundles cannot join yet" },
    Key { key: "`[reload_group.<name>] check`", default: "none", meaning: "run once over the staged set (e.g. `nginx -t -q`), each staged file shown at its destination in a private mount namespace, before anything is installed; failing, nothing is installed or reloaded (`check-failed` on each member). Without root, or for a member file that does not exist yet, it runs over the installed set and a failure puts every previous file back" },
    Key { key: "`[reload_group.<name>] reload`, `verify`, `hook_timeout`, `run_as`, `verify_timeout`, `verify_settle`, `nginx_pid`, `nginx_error_log`", default: "as for an `[[app]]`", meaning: "the group's one reload and its verification, as an app's; the hooks get `ZKCOORD_APP` = the group's name and `ZKCOORD_VERSION`, `ZKCOORD_PREVIOUS_VERSION`, `ZKCOORD_SHA256`, `ZKCOORD_PUBLISH_ID` as space-separated `app=value` pairs of the batch" },
    Key { key: "`[reload_group.<name>] quiet`", default: "`\"500ms\"`", meaning: "a member's change waits this long for the other members' (restarted by each, at most 10 windows in all), so a burst touching several files reloads once; at most `\"60s\"`" },
    Key { key: "`[[app]] on_drift`", default: "`\"reapply\"`", meaning: "when `dest` was edited by hand: `\"reapply\"` installs the applied version again (check, reload, verify); `\"report\"` leaves the edit, reports it (status `drift`: on-disk sha256 and a `+3 -1 lines` summary) and still applies new versions; `\"hold\"` leaves it and applies nothing new (status and `/healthz` say held) until the file matches the applied version again or is removed" },
    Key { key: "`[[app]] resync_interval`", default: "the top-level `resync_interval`", meaning: "this app's periodic pass (same forms)" },
    Key { key: "`[[app]] owner`, `group`", default: "unchanged", meaning: "user/group name or number" },
    Key { key: "`[[app]] check`", default: "none", meaning: "argv list (no shell), or a string run by `/bin/sh -c` (where each placeholder becomes one shell word, quoted as needed: write `{src}`, not `'{src}'`); `{src}` is the new file, `{dest}` and `{version}` what it becomes; `ZKCOORD_APP`, `ZKCOORD_VERSION`, `ZKCOORD_PREVIOUS_VERSION`, `ZKCOORD_SHA256`, `ZKCOORD_DEST`, `ZKCOORD_PUBLISH_ID` in its environment" },
    Key { key: "`[[app]] reload`", default: "none", meaning: "same forms and placeholders as `check` (no `{src}`); `ZKCOORD_ROLLBACK=1` on the reload after a rollback" },
    Key { key: "`[[app]] verify`", default: "none (the reload's exit status is trusted)", meaning: "after the reload, prove the service runs the new content before reporting it applied: `\"nginx\"` (the built-in check: a new worker generation appears under the master in `nginx_pid`, and `nginx_error_log` holds no `[emerg]`/`[alert]`/`[crit]`/`[error]` line about the configuration since the reload) or a command (same forms as `check`, `{src}` is `dest`) run until it exits 0; failing is `reload-failed`: the previous content is put back, reloaded and verified again" },
    Key { key: "`[[app]] verify_timeout`", default: "`\"10s\"`", meaning: "one run of a verify command is killed with its process group after this" },
    Key { key: "`[[app]] verify_settle`", default: "`\"3s\"`", meaning: "how long after the reload the service may take to pass verification" },
    Key { key: "`[[app]] nginx_pid`, `nginx_error_log`", default: "none", meaning: "with `verify = \"nginx\"`: nginx's `pid` file (required) and its `error_log` file, absolute paths" },
    Key { key: "`[[app]] hook_timeout`", default: "`\"30s\"`", meaning: "a hook still running then is killed with its whole process group" },
    Key { key: "`[[app]] run_as`", default: "the daemon's user", meaning: "run check and reload as this user (hooks always get a clean environment)" },
    Key { key: "`[[app]] follow_symlinks`", default: "`false`", meaning: "a symlink at `dest` is refused unless true (then its target is replaced atomically)" },
    Key { key: "`[[app]] trusted_keys`", default: "none", meaning: "ed25519 public keys (PEM or base64 files); when set, only versions signed by one of them (`publish --sign-key`) are installed, others get status `rejected`" },
    Key { key: "`[zookeeper] auth_file`", default: "none", meaning: "credentials `user:password`, mode 0600 (refused if others can read it)" },
    Key { key: "`[zookeeper] auth_scheme`", default: "`\"digest\"`", meaning: "`\"digest\"` (ZooKeeper's digest scheme) or `\"sasl\"` (SASL DIGEST-MD5 with the same user:password)" },
    Key { key: "`[zookeeper.tls] ca_file`, `cert_file`, `key_file`", default: "off", meaning: "TLS to ZooKeeper: the CA the servers chain to, and an optional client certificate and key (mode 0600); the certificate is an ACL identity `x509:<subject>`" },
    Key { key: "`[[app]] kind`", default: "`\"file\"`", meaning: "`\"bundle\"`: `dest` is a directory tree behind a symlink, published from a directory" },
    Key { key: "`[[app]] keep_local`", default: "`3`", meaning: "bundles: version directories kept on disk, the current one included (at least 2)" },
    Key { key: "`max_config_size`", default: "`\"64MiB\"`", meaning: "largest config or packed bundle (bytes or `\"…KiB\"`, `\"…MiB\"`); publisher, agent and app host each enforce their own" },
    Key { key: "`[[app]] max_parallel_reloads`", default: "absent (no limit)", meaning: "at most this many hosts install (check, rename, reload) at once; at least 1" },
    Key { key: "`[[app]] splay`", default: "absent (none)", meaning: "random delay below this before applying a new version; at most `\"1h\"`" },
    Key { key: "`[[app]] render`", default: "absent", meaning: "`{ service, path, template, allow_empty = false, quiet = \"200ms\", max_wait = \"2s\" }`: render `dest` from a service's live members (see Service registry)" },
    Key { key: "`[app.render] min_members`", default: "`1`; `0` with `allow_empty = true`", meaning: "fewer live members are held back: the file keeps its content, status `error` and `/healthz` say `held: …`, `zkcoord_render_held` is 1; `allow_empty = true` is `min_members = 0` (setting both to disagree is an error)" },
    Key { key: "`[app.render] max_shrink`", default: "`\"50%\"`; `\"off\"` when `min_members` is 0", meaning: "a render more than this below the last applied member count (kept in `state_dir`, so a restart still compares with it) is held back like `min_members`: a percentage `\"0%\"`-`\"100%\"`, a count like `10`, `0` (any drop held) or `\"off\"`; the hold ends when members come back; to accept a shrink, raise it and reload (SIGHUP). An explicit value applies with `allow_empty = true` too, the drop to zero included" },
    Key { key: "`[[service]] name`, `port`", default: "required", meaning: "the service, and the port clients connect to" },
    Key { key: "`[[service]] host`", default: "host name", meaning: "the address clients connect to" },
    Key { key: "`[[service]] data`", default: "`{}`", meaning: "extra JSON fields of the member (not `host` or `port`)" },
    Key { key: "`[[service]] path`, `node_name`, `sequential`", default: "`/services/<name>`, node_id, `false`", meaning: "where the member lives and what it is called (`sequential`: EPHEMERAL_SEQUENTIAL, `node_name` is the prefix)" },
    Key { key: "`[[service]] check`, `interval`, `timeout`, `rise`, `fall`", default: "none, `\"5s\"`, `\"2s\"`, `2`, `3`", meaning: "health check (argv or shell string) and its hysteresis" },
    Key { key: "`[agent] trigger_token_file`", default: "none", meaning: "a shared token (mode 0600); triggers must then send `add:<token>|<data>`" },
    Key { key: "`[acl] enabled`, `agents`, `apps`, `publishers`", default: "off", meaning: "ACLs on every node zkcoord creates, by role; digest identities from `zkcoordctl acl digest user:password`, or `sasl:<user>`, or `x509:<subject>`; `zkcoordctl acl init` creates missing parents and repairs wrong ACLs. See SECURITY.md" },
];

/// The Markdown table, as it stands in the README between [`README_BEGIN`] and [`README_END`].
pub fn markdown_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for k in KEYS {
        out.push_str(&format!("| {} | {} | {} |\n", k.key, k.default, k.meaning));
    }
    out
}

/// Markdown text (backticks) as roff: code in bold, roff's special characters escaped.
fn roff(text: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    for ch in text.chars() {
        match ch {
            '`' => {
                out.push_str(if code { "\\fR" } else { "\\fB" });
                code = !code;
            }
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c => out.push(c),
        }
    }
    if code {
        out.push_str("\\fR");
    }
    // A line may not start with a control character.
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// The `zkcoord.toml(5)` man page in roff, `version` in its footer.
pub fn man_page(version: &str) -> String {
    let mut out = format!(
        ".TH ZKCOORD.TOML 5 \"\" \"zkcoord {version}\" \"File Formats\"\n\
         .SH NAME\nzkcoord.toml \\- configuration of zkcoordd and zkcoordctl\n\
         .SH SYNOPSIS\n/etc/zkcoord.toml\n.br\n/etc/zkcoord.d/*.toml\n\
         .SH DESCRIPTION\n\
         \\fBzkcoordd\\fR(8) and \\fBzkcoordctl\\fR(1) read a TOML file, /etc/zkcoord.toml unless \\fB\\-\\-config\\fR \
         names another. Durations are strings like \"500ms\" or \"10s\"; modes are octal strings like \"0644\". \
         Unknown keys, wrong types and impossible combinations are errors naming the file, the key and what was \
         expected; \\fBzkcoordd \\-\\-check\\-config\\fR reports them without starting (exit 78) and lists every file it read.\n\
         .SS Drop-ins\n\
         After the main file, every *.toml file in the zkcoord.d directory beside it (/etc/zkcoord.d for \
         /etc/zkcoord.toml, or \\fBdropin_dir\\fR) is merged in name order; hidden files are skipped. A drop-in may add \
         [[app]] and [[service]] entries and set keys no other file sets; a key set in two files is an error naming \
         both. SIGHUP (\\fBsystemctl reload zkcoordd\\fR) re-reads them all.\n\
         .SH KEYS\n"
    );
    for k in KEYS {
        out.push_str(&format!(".TP\n{}\n{}\n.br\nDefault: {}\n", roff(k.key), roff(k.meaning), roff(k.default)));
    }
    out.push_str(
        ".SH ENVIRONMENT\n\
         \\fBZKCOORD_ZK_HOSTS\\fR (zookeeper.hosts), \\fBZKCOORD_SESSION_TIMEOUT\\fR, \\fBZKCOORD_ROLE\\fR, \
         \\fBZKCOORD_NODE_ID\\fR, \\fBZKCOORD_STATE_DIR\\fR override one key each; \\fBZKCOORD_LOG\\fR or \\fBRUST_LOG\\fR \
         override log_level. The packaged unit reads them from /etc/default/zkcoord when that file exists.\n\
         .SH FILES\n/etc/zkcoord.toml, /etc/zkcoord.d/*.toml, /etc/default/zkcoord, /var/lib/zkcoord\n\
         .SH SEE ALSO\n\\fBzkcoordd\\fR(8), \\fBzkcoordctl\\fR(1)\n",
    );
    out
}

/// `readme` with its key table replaced by [`markdown_table`]; None when the markers are missing.
pub fn update_readme(readme: &str) -> Option<String> {
    let begin = readme.find(README_BEGIN)? + README_BEGIN.len();
    let end = readme[begin..].find(README_END)? + begin;
    Some(format!("{}\n{}{}", &readme[..begin], markdown_table(), &readme[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_key_table_is_the_one_rendered_from_this_module() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let updated = update_readme(readme).expect("README has the config-keys markers");
        assert!(updated == readme, "README's key table is out of date: run `cargo run --example gen-manpages -- --update-readme`");
    }

    #[test]
    fn the_man_page_escapes_roff_and_names_every_key() {
        let page = man_page("0.0.0");
        assert!(page.starts_with(".TH ZKCOORD.TOML 5"));
        assert!(page.contains("\\fB[zookeeper] hosts\\fR"), "{page}");
        assert!(page.contains("\\fBlog_format\\fR") && page.contains("\\fBdropin_dir\\fR"));
        assert_eq!(page.matches("\n.TP\n").count(), KEYS.len());
        assert!(!page.lines().any(|l| l.starts_with('.') && l.len() > 1 && l.chars().nth(1).is_some_and(|c| c == ' ')), "no stray control lines");
        assert_eq!(roff("`a-b` \\ x"), "\\fBa\\-b\\fR \\e x");
    }
}
