#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz with libFuzzer) for a bounded time each and prints
# one line per target: seconds, corpus size, and whether it found a crash. Not part of CI:
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
# Needs a nightly toolchain (rustup's `nightly`) and cargo-fuzz (`cargo install cargo-fuzz`).
# Corpora stay in fuzz/corpus/<target>; crashes in fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
targets=(legacy_body v1_args x509_chain oidc_token proxy_header task_parameters event_report monitor_query monitor_log)
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 2; }
cargo +nightly fuzz build -O
# Seeds: the small inputs in fuzz/seeds/, and for x509_chain a certificate, a VOMS proxy and
# its AC extension made here (openssl, and voms-proxy-fake when installed), each prefixed by
# the byte that picks the parser.
seed_x509() {
    local out="corpus/x509_chain" work
    work="$(mktemp -d)"
    (
        cd "$work"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
            -subj "/DC=org/DC=test/CN=Seed CA" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout user.key -out user.csr \
            -subj "/DC=org/DC=test/OU=Users/CN=Seed User" 2>/dev/null
        printf 'basicConstraints=critical,CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > user.ext
        openssl x509 -req -in user.csr -CA ca.pem -CAkey ca.key -set_serial 77 -days 2 \
            -extfile user.ext -out user.pem 2>/dev/null
        chmod 600 user.key
        mkdir certs && cp ca.pem "certs/$(openssl x509 -hash -noout -in ca.pem).0"
        if command -v voms-proxy-fake >/dev/null; then
            voms-proxy-fake -cert user.pem -key user.key -hostcert user.pem -hostkey user.key \
                -voms atlas -uri voms.test.org:15001 -rfc -q -fqan /atlas/Role=production \
                -certdir certs -out proxy.pem >/dev/null 2>&1 || true
        fi
    )
    for pem in "$work/user.pem" "$work/ca.pem" "$work/proxy.pem"; do
        [ -f "$pem" ] || continue
        { printf '\x00'; openssl x509 -in "$pem" -outform DER; } > "$out/$(basename "$pem" .pem).der"
    done
    if [ -f "$work/proxy.pem" ]; then
        openssl x509 -in "$work/proxy.pem" -outform DER -out "$work/proxy.der"
        offset="$(openssl asn1parse -inform DER -in "$work/proxy.der" |
            grep -A1 '8005.100.100.5' | tail -n 1 | cut -d: -f1 | tr -d ' ')"
        if [ -n "$offset" ]; then
            openssl asn1parse -inform DER -in "$work/proxy.der" -strparse "$offset" \
                -noout -out "$work/ac.der" >/dev/null 2>&1 || true
            [ -s "$work/ac.der" ] && { printf '\x01'; cat "$work/ac.der"; } > "$out/voms-ac.der"
        fi
    fi
    rm -rf "$work"
}

printf '%-14s %8s %8s %s\n' target seconds corpus found
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    if [ -d "seeds/$target" ]; then cp -n seeds/"$target"/* "corpus/$target/"; fi
    if [ "$target" = x509_chain ] && command -v openssl >/dev/null; then seed_x509; fi
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
