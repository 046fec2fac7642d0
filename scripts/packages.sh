#!/usr/bin/env bash
# Builds the .deb and the .rpm into target/: release binaries (stripped), man pages generated
# from the CLI definitions, then cargo-deb and cargo-generate-rpm (installed if missing, at
# pinned versions). Versions come from Cargo.toml; the changelog from the git history.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "==> packages: $*"; }
LOCKED=$([ -f Cargo.lock ] && echo --locked || true)

ensure_tool() { # binary crate version
    if ! command -v "$1" >/dev/null 2>&1; then
        say "installing $2 $3 (cargo install)"
        cargo install "$2" --version "$3" --locked
    fi
}
ensure_tool cargo-deb cargo-deb 3.8.0
ensure_tool cargo-generate-rpm cargo-generate-rpm 0.21.1

say "cargo build --release $LOCKED"
cargo build --release $LOCKED --bins
say "man pages -> target/man"
cargo run --release $LOCKED --quiet --example gen-manpages -- target/man
say "changelog from the git history -> target/changelog"
bash scripts/changelog.sh target/changelog
say "cargo deb -> target/"
cargo deb --no-build $LOCKED --output target/
say "cargo generate-rpm -> target/"
cargo generate-rpm --output target/
say "built:"
ls -l target/*.deb target/*.rpm
