#!/usr/bin/env bash
# zkcoord demo: the main job on one machine.
#
#   a local ZooKeeper -> zkcoordd (role "both": agent + app) -> zkcoordctl publish
#   -> the file is written atomically, checked, and "reloaded"
#   -> a bad config is refused by the check and the old file stays
#   -> the legacy `add|<data>` trigger publishes too
#
# Run `make demo` (installs ZooKeeper and Java first via scripts/install-deps.sh), or this script
# directly once they are installed. KEEP=1 keeps the temporary directory (configs, logs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }

TMP=$(mktemp -d /tmp/zkcoord-demo.XXXXXX)
ZK_PID=""
DAEMON_PID=""
ZK_DIR="$TMP/zk"
DAEMON_LOG="$TMP/zkcoordd.log"
CONFIG="$TMP/zkcoord.toml"

show_logs() {
    if [ -s "$DAEMON_LOG" ]; then
        echo "---- last 40 lines of $DAEMON_LOG ----" >&2
        tail -n 40 "$DAEMON_LOG" >&2 || true
        echo "----" >&2
    fi
}

fail() {
    echo >&2
    echo "demo: FAILED: $*" >&2
    show_logs
    exit 1
}

stop_pid() { # pid name seconds: SIGTERM, wait, then SIGKILL
    local pid=$1 name=$2 secs=$3 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "demo: $name (pid $pid) still running after ${secs}s, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    stop_pid "$DAEMON_PID" zkcoordd 10
    stop_pid "$ZK_PID" ZooKeeper 5
    wait 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then
        echo "demo: kept $TMP (config, logs, files)"
    else
        rm -rf "$TMP"
    fi
    if [ "$rc" -ne 0 ]; then
        echo "demo: exit status $rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port on 127.0.0.1 that nothing listens on (below the kernel's ephemeral range).
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    fail "no free TCP port found"
}

# Ask ZooKeeper a four-letter word.
zk_4lw() { # port word
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf '%s' "$2" >&3
        timeout 2 cat <&3
    ) 2>/dev/null
}

# Poll a command (given as arguments) for up to N seconds.
wait_for() { # seconds description command...
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if "$@"; then
            return 0
        fi
        sleep 0.1
    done
    fail "timed out after ${secs}s waiting for: $what"
}

daemon_alive() {
    kill -0 "$DAEMON_PID" 2>/dev/null
}

# Run zkcoordctl, print what it says, return its status.
ctl() {
    local rc=0 out
    out=$("$CTL" --config "$CONFIG" "$@" 2>&1) || rc=$?
    if [ -n "$out" ]; then
        printf '%s\n' "$out" | sed 's/^/    | /'
    fi
    return "$rc"
}

# Publish, retrying while the daemon is still coming up (no leader yet and the like).
publish() { # file message
    local i rc
    for ((i = 1; i <= 10; i++)); do
        rc=0
        info "\$ zkcoordctl --config $CONFIG publish nginxconf $1 --message \"$2\""
        ctl publish nginxconf "$1" --message "$2" || rc=$?
        if [ "$rc" -eq 0 ]; then
            return 0
        fi
        case "$rc" in
            64 | 65 | 78) fail "zkcoordctl publish failed with status $rc (usage, data or config error)" ;;
        esac
        daemon_alive || fail "zkcoordd exited"
        info "publish exited with status $rc; retrying in 2s ($i/10)"
        sleep 2
    done
    fail "zkcoordctl publish did not succeed"
}

same_file() { cmp -s "$1" "$2"; }

count_lines() { # file: number of lines, 0 if missing
    if [ -f "$1" ]; then wc -l <"$1" | tr -d ' '; else echo 0; fi
}

for tool in java timeout cmp; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing (run scripts/install-deps.sh)"
done
[ -f /usr/share/java/zookeeper.jar ] || fail "ZooKeeper is missing (run scripts/install-deps.sh)"

# ---------------------------------------------------------------------------------------------
step "Building release binaries"
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || fail "cargo is missing"
LOCKED=()
[ -f Cargo.lock ] && LOCKED=(--locked)
info "\$ cargo build --release ${LOCKED[*]}"
cargo build --release "${LOCKED[@]}" || fail "cargo build failed"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DAEMON="$TARGET_DIR/release/zkcoordd"
CTL="$TARGET_DIR/release/zkcoordctl"
if [ ! -x "$DAEMON" ] || [ ! -x "$CTL" ]; then
    fail "binaries not found in $TARGET_DIR/release"
fi

# ---------------------------------------------------------------------------------------------
step "Starting a local ZooKeeper"
ZK_PORT=$(free_port)
mkdir -p "$ZK_DIR/data"
cat >"$ZK_DIR/zoo.cfg" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
4lw.commands.whitelist=*
admin.enableServer=false
EOF
ZK_CP="/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"
# Debian's zookeeper.jar has no logging binding on its class path; add it so the log says things.
for jar in /usr/share/java/slf4j-log4j12.jar /usr/share/java/log4j-1.2.jar; do
    [ -f "$jar" ] && ZK_CP="$ZK_CP:$jar"
done
java -Xmx256m -cp "$ZK_CP" -Dzookeeper.root.logger=INFO,CONSOLE \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_DIR/zoo.cfg" \
    >"$ZK_DIR/zookeeper.log" 2>&1 </dev/null &
ZK_PID=$!
info "ZooKeeper pid $ZK_PID on 127.0.0.1:$ZK_PORT (log $ZK_DIR/zookeeper.log)"
zk_ready() {
    if ! kill -0 "$ZK_PID" 2>/dev/null; then
        tail -n 30 "$ZK_DIR/zookeeper.log" >&2
        fail "ZooKeeper exited while starting"
    fi
    zk_4lw "$ZK_PORT" srvr | grep -q '^Mode: standalone'
}
wait_for 30 "ZooKeeper to serve on port $ZK_PORT" zk_ready
info "$(zk_4lw "$ZK_PORT" srvr | grep -E '^(Zookeeper version|Mode)' | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------
step "Writing the zkcoordd config ($CONFIG)"
TRIGGER_PORT=$(free_port)
mkdir -p "$TMP/www" "$TMP/state"
cat >"$CONFIG" <<EOF
role = "both"
node_id = "demo"
state_dir = "$TMP/state"

[zookeeper]
hosts = "127.0.0.1:$ZK_PORT"
session_timeout = "4s"

[agent]
leaders = 1
keep_versions = 10
trigger_listen = "127.0.0.1:$TRIGGER_PORT"
trigger_app = "nginxconf"

[[app]]
name = "nginxconf"
dest = "$TMP/www/nginx.conf"
mode = "0644"
check = ["sh", "-c", "grep -q worker_processes {src}"]
reload = ["sh", "-c", "echo reloaded at \$(date +%T.%N) >> $TMP/reloads.log"]
hook_timeout = "10s"
EOF
sed 's/^/    | /' "$CONFIG"
info "\$ zkcoordd --config $CONFIG --check-config"
CHECK_OUT=$("$DAEMON" --config "$CONFIG" --check-config 2>&1) || {
    printf '%s\n' "$CHECK_OUT" >&2
    fail "zkcoordd --check-config rejected the demo config"
}
[ -n "$CHECK_OUT" ] && printf '%s\n' "$CHECK_OUT" | sed 's/^/    | /'

# ---------------------------------------------------------------------------------------------
step "Starting zkcoordd (log $DAEMON_LOG)"
RUST_LOG=${RUST_LOG:-info} "$DAEMON" --config "$CONFIG" >>"$DAEMON_LOG" 2>&1 </dev/null &
DAEMON_PID=$!
info "zkcoordd pid $DAEMON_PID"
sleep 1
daemon_alive || fail "zkcoordd exited right after starting"

# ---------------------------------------------------------------------------------------------
step "Publishing a config with zkcoordctl"
DEST="$TMP/www/nginx.conf"
SAMPLE="$TMP/sample.conf"
cat >"$SAMPLE" <<'EOF'
# nginx.conf published by the zkcoord demo
worker_processes auto;
events { worker_connections 1024; }
http {
    server { listen 8080; location / { return 200 "hello from zkcoord\n"; } }
}
EOF
publish "$SAMPLE" "demo publish"
info "waiting for $DEST to match the published file"
wait_for 20 "$DEST to equal the published config" same_file "$SAMPLE" "$DEST"
info "applied; $DEST now reads:"
sed 's/^/    | /' "$DEST"
info "reload log ($TMP/reloads.log):"
if [ -f "$TMP/reloads.log" ]; then
    sed 's/^/    | /' "$TMP/reloads.log"
else
    info "(no reload recorded yet)"
fi
info "\$ zkcoordctl --config $CONFIG history nginxconf"
ctl history nginxconf || fail "zkcoordctl history failed"

# ---------------------------------------------------------------------------------------------
step "Publishing a bad config (no worker_processes): the check must refuse it"
BAD="$TMP/bad.conf"
cat >"$BAD" <<'EOF'
# a broken nginx.conf: it lacks the directive that the check command looks for
events { worker_connections 1024; }
EOF
RELOADS_BEFORE=$(count_lines "$TMP/reloads.log")
info "\$ zkcoordctl --config $CONFIG publish nginxconf $BAD --message \"bad config\""
if ctl publish nginxconf "$BAD" --message "bad config"; then
    info "published (the agent accepted it; the app host's check decides)"
else
    info "publish refused (exit $?)"
fi
sleep 2
daemon_alive || fail "zkcoordd exited after the bad publish"
same_file "$SAMPLE" "$DEST" || {
    diff "$SAMPLE" "$DEST" >&2 || true
    fail "$DEST changed after publishing a config that fails the check"
}
RELOADS_AFTER=$(count_lines "$TMP/reloads.log")
[ "$RELOADS_BEFORE" = "$RELOADS_AFTER" ] || fail "a reload ran for a config that failed the check"
info "unchanged: $DEST still holds the good config, and no reload ran"
CHECK_LINES=$(grep -i 'check' "$DAEMON_LOG" | tail -n 3 || true)
if [ -n "$CHECK_LINES" ]; then
    info "what the daemon logged about it:"
    printf '%s\n' "$CHECK_LINES" | sed 's/^/    | /'
fi

# ---------------------------------------------------------------------------------------------
step "Publishing through the legacy trigger (add|<data> to 127.0.0.1:$TRIGGER_PORT)"
TRIGGERED="$TMP/triggered.conf"
cat >"$TRIGGERED" <<'EOF'
# nginx.conf sent by a legacy script over the add| trigger
worker_processes 4;
events { worker_connections 2048; }
EOF
send_trigger() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$TRIGGER_PORT" "$TRIGGERED" <<'PY'
import socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
data = open(path, "rb").read()
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(b"add|" + data)
s.shutdown(socket.SHUT_WR)
reply = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
except OSError:
    pass
s.close()
if reply:
    sys.stdout.write("    | trigger answered: " + reply.decode("utf-8", "replace").strip() + "\n")
PY
    else
        (
            exec 4<>"/dev/tcp/127.0.0.1/$TRIGGER_PORT" || exit 1
            { printf 'add|'; cat "$TRIGGERED"; } >&4
            exec 4>&-
        ) 2>/dev/null
    fi
}
sent=0
for ((i = 1; i <= 20; i++)); do
    if send_trigger; then
        sent=1
        break
    fi
    daemon_alive || fail "zkcoordd exited"
    sleep 0.5
done
[ "$sent" = 1 ] || fail "could not connect to the trigger on 127.0.0.1:$TRIGGER_PORT"
info "sent $(wc -c <"$TRIGGERED") bytes; waiting for $DEST to match"
wait_for 20 "$DEST to equal the config sent over the trigger" same_file "$TRIGGERED" "$DEST"
info "applied; $DEST now reads:"
sed 's/^/    | /' "$DEST"
info "\$ zkcoordctl --config $CONFIG history nginxconf"
ctl history nginxconf || fail "zkcoordctl history failed"

# ---------------------------------------------------------------------------------------------
step "Stopping zkcoordd (SIGTERM)"
kill -TERM "$DAEMON_PID"
for ((i = 0; i < 100; i++)); do
    daemon_alive || break
    sleep 0.1
done
daemon_alive && fail "zkcoordd did not exit within 10s of SIGTERM"
rc=0
wait "$DAEMON_PID" || rc=$?
DAEMON_PID=""
info "zkcoordd exited with status $rc"
[ "$rc" -eq 0 ] || fail "zkcoordd exited with status $rc after SIGTERM (expected 0)"

step "Stopping ZooKeeper"
stop_pid "$ZK_PID" ZooKeeper 5
wait "$ZK_PID" 2>/dev/null || true
ZK_PID=""

step "Demo OK"
