#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for SECONDS each (default 60) on the stable toolchain:
#
#   tools/fuzz.sh 300                   # every target, 300 s each
#   tools/fuzz.sh 60 chat_template      # some targets
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`, crates.io only); RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept the sanitizer flags cargo-fuzz passes. Each target starts from the
# committed seeds in fuzz/seeds/<target>/ (regenerate: python3 tools/make_fuzz_seeds.py) and
# grows its working corpus in fuzz/corpus/<target>/ (ignored by git). A crash stops the
# script and leaves the input in fuzz/artifacts/<target>/; turn it into a regression test in
# the normal suite. One line per target reports libFuzzer's count of executions. (`-O`: optimised
# build without debug assertions, as the recorded numbers; drop it to fuzz with overflow checks,
# which rebuilds every dependency.)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1
targets="${*:-$(cargo fuzz list)}"
nice -n 19 cargo fuzz build -O
for target in $targets; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="$(mktemp)"
  # -rss_limit_mb: an input that makes a loader allocate gigabytes is a finding too.
  if ! nice -n 19 cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 -timeout=20 -print_final_stats=1 -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $target FAILED (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  runs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "$target: ${runs:-?} executions in ${seconds} s, no crash"
  rm -f "$log"
done
