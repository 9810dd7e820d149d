#!/usr/bin/env bash
# make demo: the main job on embedded defaults, no server needed.
# Three dated snapshots of Demokommune's organisation (configs/demo) go
# through the file source into the state and out to two JSON Lines
# receivers; then a summary and one user's bitemporal history.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin/connector
CFG=configs/demo.yaml
rm -rf demo-out
echo "== connector run --once -c $CFG"
$BIN run --once -c "$CFG" 2>demo-out.log || { cat demo-out.log >&2; exit 1; }
mv demo-out.log demo-out/agent.log
echo
echo "== receivers"
for f in demo-out/events.jsonl demo-out/personale.jsonl; do
  printf '  %-28s %5d events\n' "$f" "$(wc -l <"$f")"
done
echo
echo "== connector history -c $CFG Bruger/fb9775ad-bc68-5ff4-a7ef-54ddf8970a87"
echo "   (created with a typo on day 1, corrected on day 2, moved on day 3)"
$BIN history -c "$CFG" Bruger/fb9775ad-bc68-5ff4-a7ef-54ddf8970a87
echo
echo "== her registration valid on 2026-01-15, as known now (before the move of 2026-03-01)"
$BIN history -c "$CFG" Bruger/fb9775ad-bc68-5ff4-a7ef-54ddf8970a87 --valid-at 2026-01-15 | sed -n 1p   # (sed reads it all: no SIGPIPE under pipefail) (the next line, registration time, is wall-clock)
echo
echo "== a second snapshot of the same input changes nothing"
$BIN snapshot -c "$CFG" --source demokommune --dry-run 2>/dev/null
echo
echo "Events: demo-out/events.jsonl (internal receiver, no CPR), demo-out/personale.jsonl (HR, users with CPR)."
echo "Try: $BIN status -c $CFG    $BIN replay -c $CFG --receiver organisation --from beginning"
