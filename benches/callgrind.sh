#!/usr/bin/env bash
# Instructions per copy of the relay's per-copy work (the workloads of relay/benches/per_copy.rs),
# counted by callgrind: deterministic on a shared machine where time is not, so a change shows
# as a count that moved. Only each workload's `run` is collected (its input is prepared apart).
#
#   benches/callgrind.sh            # every workload
#   benches/callgrind.sh fan_out_gcm_100 protect_gcm
#
# Needs valgrind. Callgrind's CPU hides SHA-NI and AVX-512, so the crypto libraries take other
# paths than natively: compare counts with counts, not with times.
set -euo pipefail
cd "$(dirname "$0")/.."

workloads=("$@")
if [ ${#workloads[@]} -eq 0 ]; then
    workloads=(header_rewrite protect_gcm protect_sha1 twcc_recording twcc_feedback_gcm rtx_lookup_gcm
        rtx_lookup_sha1 fan_out_gcm_1 fan_out_gcm_10 fan_out_gcm_100 fan_out_sha1_100)
fi

bin=$(cargo bench -p relay --bench per_copy --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("executable") and m["target"]["name"] == "per_copy":
        print(m["executable"])' | tail -n 1)
[ -x "$bin" ] || { echo "per_copy benchmark binary not found" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-20s %10s %8s %14s\n' workload iterations units "instr/unit"
for w in "${workloads[@]}"; do
    case "$w" in
        fan_out_*_100) n=200 ;;
        fan_out_*) n=2000 ;;
        *) n=20000 ;;
    esac
    line=$(PER_COPY_COUNT="$w:$n" valgrind --tool=callgrind --callgrind-out-file="$out/$w" \
        --collect-atstart=no --toggle-collect='relay::bench::*::run' "$bin" 2>"$out/$w.log")
    copies=$(awk '{print $4}' <<<"$line")
    total=$(awk '/^(summary|totals):/ {print $2}' "$out/$w" | tail -n 1)
    printf '%-20s %10d %8d %14.0f\n' "$w" "$n" "$copies" "$(echo "$total / $copies" | bc -l)"
done
