#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS, default 60) on the committed corpus.
# cargo-fuzz is installed if missing; the toolchain here is stable, so RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz use the sanitizer flags it needs. A crash fails the run and leaves the input in
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
say() { echo "==> fuzz: $*"; }
SECONDS_EACH=${FUZZ_SECONDS:-60}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    say "installing cargo-fuzz 0.13.2 (cargo install)"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
export RUSTC_BOOTSTRAP=1
say "building the targets"
cargo fuzz build -O
for target in $(cargo fuzz list); do
    say "$target for ${SECONDS_EACH}s on corpus/$target"
    # A scratch copy of the corpus, so a run does not grow the committed one.
    scratch=$(mktemp -d)
    cp -r "corpus/$target/." "$scratch/"
    cargo fuzz run -O "$target" "$scratch" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 2>&1 | grep -E "^(#[0-9]+ +DONE|Done|==[0-9]+==ERROR|SUMMARY)" || true
    status=${PIPESTATUS[0]}
    rm -rf "$scratch"
    if [ "$status" -ne 0 ]; then
        echo "fuzz: $target failed (exit $status); the crashing input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
say "all targets ran ${SECONDS_EACH}s without a crash"
