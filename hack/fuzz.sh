#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 60s; a
# count such as 2000x bounds the inputs instead): make fuzz runs them
# long, make test for a bounded number of inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${FUZZTIME:-60s}
grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u | while read -r dir; do
  for f in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
    echo "fuzz: $dir $f ($time)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$time" "$dir"
  done
done
