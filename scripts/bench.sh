#!/usr/bin/env bash
# make bench: throughput as ratios against raw baselines measured in the
# same run. Not part of make test: figures, not pass/fail.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${BENCH_USERS:-1000000}"
echo "== spine: file snapshot → state → receiver, $USERS users (scripts/bench)"
go run ./scripts/bench -users "$USERS" -bin bin/connector
echo
# Adapter benchmarks (each reports its own raw baseline and ratio).
for pkg in ./capture/postgres ./capture/mysql ./publish/kafka ./publish/fordeler ./capture/ldap; do
  if ls "$pkg"/*_test.go >/dev/null 2>&1 && grep -qs '^func Benchmark' "$pkg"/*_test.go; then
    echo "== $pkg"
    go test -run '^$' -bench . -benchtime 1x -timeout 60m "$pkg"
    echo
  fi
done
