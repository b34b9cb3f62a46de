#!/usr/bin/env bash
# Run every fuzz target of the module for FUZZTIME (default 10s) each.
# `go test -fuzz` takes one target of one package at a time, so find them:
# packages whose tests declare `func FuzzXxx`, then `go test -list`.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}

dirs=$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u)
n=0
for dir in $dirs; do
	out=$("$GO" test -list '^Fuzz' "$dir")
	for target in $(printf '%s\n' "$out" | grep '^Fuzz' || true); do
		echo "==> $dir $target ($FUZZTIME)"
		"$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$dir"
		n=$((n + 1))
	done
done
echo "fuzz: ran $n target(s) for $FUZZTIME each"
