#!/usr/bin/env bash
# Installs what zkcoord's tests and demo need on Debian 12: ZooKeeper (Debian's `zookeeper`
# package, run by the tests themselves, never as a service), a Java runtime, and the tools the
# package tests use (rpm, debootstrap, systemd-nspawn, file, lintian, rpmlint), keytool and openssl
# for the TLS test, prometheus with promtool for the monitoring test, and nginx-light (run by the
# tests as a plain process in a temp prefix) for the post-reload verification test.
# Idempotent: when everything is present it does not touch apt at all. Run as root.
set -euo pipefail

say() { echo "==> install-deps: $*"; }

zk_installed() {
    [ -f /usr/share/java/zookeeper.jar ] &&
        dpkg-query -W -f='${Status}' zookeeper 2>/dev/null | grep -q 'install ok installed'
}

packages=()
if zk_installed; then
    say "zookeeper $(dpkg-query -W -f='${Version}' zookeeper) already installed"
else
    packages+=(zookeeper)
fi
if command -v java >/dev/null 2>&1; then
    say "java already installed ($(command -v java))"
else
    packages+=(default-jre-headless)
fi
# For the package tests: rpm (inspect and install the .rpm), debootstrap and systemd-container
# (a real systemd booted with systemd-nspawn), file (check that binaries are stripped).
# keytool and openssl make the TLS test's keystores and certificates.
# lintian and rpmlint judge the built packages (tests/packages.rs); prometheus and promtool
# (Debian's prometheus package, run by the tests as a plain process, never as a service) check
# the shipped alert rules and scrape live daemons (tests/monitoring.rs). nginx-light (Debian's
# nginx 1.22; its maintainer scripts' service start is refused by policy-rc.d below) is the real
# service behind tests/nginx_verify.rs.
for pair in rpm:rpm debootstrap:debootstrap systemd-nspawn:systemd-container file:file keytool:default-jre-headless openssl:openssl \
    lintian:lintian rpmlint:rpmlint prometheus:prometheus promtool:prometheus nginx:nginx-light; do
    cmd=${pair%%:*} pkg=${pair##*:}
    if command -v "$cmd" >/dev/null 2>&1; then
        say "$cmd already installed"
    else
        case " ${packages[*]:-} " in
            *" $pkg "*) ;;
            *) packages+=("$pkg") ;;
        esac
    fi
done

if [ "${#packages[@]}" -eq 0 ]; then
    say "nothing to install"
else
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "install-deps: need root to install: ${packages[*]}" >&2
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Keep maintainer scripts from starting services while we install (no init system here).
    policy_created=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        say "temporarily forbidding service starts (/usr/sbin/policy-rc.d)"
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    cleanup_policy() {
        if [ "$policy_created" -eq 1 ]; then
            "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        fi
    }
    trap cleanup_policy EXIT
    say "apt-get update"
    "${SUDO[@]}" apt-get update
    say "apt-get install -y --no-install-recommends ${packages[*]}"
    "${SUDO[@]}" apt-get install -y --no-install-recommends "${packages[@]}"
    cleanup_policy
    policy_created=0
    trap - EXIT
fi

# Check the result.
if ! zk_installed; then
    echo "install-deps: /usr/share/java/zookeeper.jar is still missing" >&2
    exit 1
fi
if ! command -v java >/dev/null 2>&1; then
    echo "install-deps: java is still missing" >&2
    exit 1
fi

# The tests start their own servers on random ports; a system ZooKeeper on 2181 (started by the
# package or by hand with the package's config) is not wanted. Stop it if there is one.
stop_system_zookeeper() {
    local pid cmd stopped=0
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        cmd=$(tr '\0' ' ' 2>/dev/null <"$dir/cmdline") || continue
        case "$cmd" in
            *QuorumPeerMain*/etc/zookeeper/conf/zoo.cfg*)
                say "stopping system ZooKeeper (pid $pid)"
                kill "$pid" 2>/dev/null || true
                stopped=1
                ;;
        esac
    done
    if [ "$stopped" -eq 1 ]; then
        sleep 2
        for dir in /proc/[0-9]*; do
            pid=${dir#/proc/}
            cmd=$(tr '\0' ' ' 2>/dev/null <"$dir/cmdline") || continue
            case "$cmd" in
                *QuorumPeerMain*/etc/zookeeper/conf/zoo.cfg*) kill -9 "$pid" 2>/dev/null || true ;;
            esac
        done
    fi
}
port_2181_listening() {
    # /proc/net/tcp{,6}: local address column, port in hex (2181 = 0885), state 0A = LISTEN.
    local files=()
    for f in /proc/net/tcp /proc/net/tcp6; do
        if [ -r "$f" ]; then files+=("$f"); fi
    done
    [ "${#files[@]}" -gt 0 ] || return 1
    awk 'FNR > 1 && $4 == "0A" && $2 ~ /:0885$/ { found = 1 } END { exit !found }' "${files[@]}"
}
stop_system_zookeeper
if port_2181_listening; then
    echo "install-deps: warning: something still listens on port 2181 (not a ZooKeeper started" \
        "from /etc/zookeeper/conf); the tests do not use that port" >&2
fi

say "ok: $(java -version 2>&1 | head -1); ZooKeeper at /usr/share/java/zookeeper.jar"
