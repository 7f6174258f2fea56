#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz with libFuzzer) for a bounded time each and prints
# one line per target: seconds, corpus size, and whether it found a crash. Not part of CI:
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
# Needs a nightly toolchain (rustup's `nightly`) and cargo-fuzz (`cargo install cargo-fuzz`).
# Corpora stay in fuzz/corpus/<target>; crashes in fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
targets=(legacy_body v1_args x509_chain oidc_token proxy_header)
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 2; }
cargo +nightly fuzz build -O
printf '%-14s %8s %8s %s\n' target seconds corpus found
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="$(mktemp)"
    if cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 >"$log" 2>&1; then
        found="nothing"
    else
        found="CRASH: see fuzz/artifacts/$target and $log"
        status=1
    fi
    corpus="$(find "corpus/$target" -type f | wc -l)"
    printf '%-14s %8s %8s %s\n' "$target" "$seconds" "$corpus" "$found"
    [ "$found" = nothing ] && rm -f "$log"
done
exit "$status"
