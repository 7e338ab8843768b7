#!/usr/bin/env bash
# Runs both fuzz harnesses, seeded, from their seed corpora: SECONDS in all, half each.
#   bash fuzz/run.sh [SECONDS]     (default 60)
# Exits non-zero on a finding; the input behind it is written to build/fuzz/.
set -uo pipefail
cd "$(dirname "$0")/.."

each=$(( ${1:-60} / 2 ))
out=build/fuzz
mkdir -p "$out"
status=0
for name in inputs cli; do
  # New inputs go to a scratch folder, not into the committed seeds.
  work=$(mktemp -d)
  files=$(mktemp -d)  # the CLI harness's problem files
  APPORTION_FUZZ_WORKDIR="$files" python fuzz/fuzz_$name.py -seed=1 -max_total_time="$each" -timeout=10 \
    -artifact_prefix="$out/$name-" "$work" "fuzz/corpus_$name" || status=1
  rm -rf "$work" "$files"
done
exit $status
