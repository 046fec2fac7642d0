#!/usr/bin/env bash
# Writes the package changelog from the git history, in Debian's format (debian/changelog),
# to the file given as the first argument (default target/changelog). One entry per version
# that Cargo.toml has carried, newest first; each entry lists the subjects of the commits made
# under that version, dated by its newest commit. The .deb installs it as
# /usr/share/doc/zkcoord/changelog.Debian.gz, the .rpm as /usr/share/doc/zkcoord/changelog.
# Without git history (a source tarball) it writes one entry for the current version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-target/changelog}
mkdir -p "$(dirname "$out")"

maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml | head -1)
version_at() { # commit -> the package version in that commit's Cargo.toml
    git show "$1:Cargo.toml" 2>/dev/null | sed -n '/^\[package\]/,/^\[/ s/^version = "\(.*\)"$/\1/p' | head -1
}
current=$(sed -n '/^\[package\]/,/^\[/ s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
if git rev-parse --git-dir >/dev/null 2>&1 && git rev-parse HEAD >/dev/null 2>&1; then
    # version<TAB>date<TAB>subject, newest first.
    git log --date='format:%a, %d %b %Y %H:%M:%S %z' --format='%H%x09%ad%x09%s' | while IFS=$'\t' read -r commit date subject; do
        v=$(version_at "$commit")
        printf '%s\t%s\t%s\n' "${v:-$current}" "$date" "$subject"
    done >"$tmp"
else
    printf '%s\t%s\t%s\n' "$current" "$(date -R)" "Built outside a git checkout: no history" >"$tmp"
fi

# Group consecutive lines by version; wrap subjects at 80 columns (Debian's limit).
awk -F'\t' -v maint="$maintainer" '
function flush() {
    if (ver == "") return
    printf "zkcoord (%s) unstable; urgency=medium\n\n", ver
    printf "%s", body
    printf "\n -- %s  %s\n\n", maint, date
    body = ""
}
$1 != ver { flush(); ver = $1; date = $2 }
{
    line = "  * "; width = 4; n = split($3, words, " ")
    for (i = 1; i <= n; i++) {
        if (width + length(words[i]) + 1 > 78 && width > 4) { body = body line "\n"; line = "    "; width = 4 }
        line = line (width > 4 ? " " : "") words[i]; width += length(words[i]) + (width > 4 ? 1 : 0)
    }
    body = body line "\n"
}
END { flush() }
' "$tmp" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' >"$out"
echo "wrote $out ($(grep -c '^zkcoord (' "$out") versions, $(grep -c '^  \* ' "$out") changes)"
