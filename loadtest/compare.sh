#!/usr/bin/env bash
# Measures sendwerk against Postfix's own smtp-source -> smtp-sink on this machine, in one run,
# and prints the ratios the load-test targets are stated in. Loopback only.
#   needs: apt-get install postfix (for /usr/sbin/smtp-source and smtp-sink), a release build
#   usage: loadtest/compare.sh [RUNS]      (default 3; medians are reported)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
loadtest=./target/release/sendwerk-loadtest
command -v smtp-source >/dev/null || { echo "smtp-source not found: apt-get install postfix" >&2; exit 1; }
[ -x "$loadtest" ] || { echo "build first: make release" >&2; exit 1; }

port=2526
smtp-sink -u postfix -c 127.0.0.1:$port 1024 >/dev/null 2>&1 &
sink_pid=$!
results=$(mktemp -d)
trap 'kill $sink_pid 2>/dev/null || true; rm -rf "$results"' EXIT
sleep 1

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate_of_smtp_source() { # connections messages
  local start end
  start=$(date +%s.%N)
  # -d: keep each connection for many messages, as sendwerk does.
  smtp-source -d -s "$1" -l 1024 -m "$2" -f sender@loadtest.example -t rcpt@loadtest.example 127.0.0.1:$port
  end=$(date +%s.%N)
  echo "$2 / ($end - $start)" | bc -l
}
json_field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }

for i in $(seq "$runs"); do
  rate_of_smtp_source 32 100000 >> "$results/source32"
  $loadtest --recipients 100000 --relay 127.0.0.1:$port 2>/dev/null | json_field delivered_per_sec >> "$results/sendwerk32"
  rate_of_smtp_source 1 20000 >> "$results/source1"
  $loadtest --recipients 20000 --connections 1 --relay 127.0.0.1:$port 2>/dev/null | json_field delivered_per_sec >> "$results/sendwerk1"
done
for f in source32 sendwerk32 source1 sendwerk1; do printf '%-10s runs: %s\n' "$f" "$(xargs printf '%.0f ' < "$results/$f")"; done
s32=$(median < "$results/source32"); w32=$(median < "$results/sendwerk32")
s1=$(median < "$results/source1"); w1=$(median < "$results/sendwerk1")
printf '32 connections: smtp-source %.0f msg/s, sendwerk %.0f msg/s, ratio %.2f (target >= 0.5)\n' "$s32" "$w32" "$(echo "$w32 / $s32" | bc -l)"
printf ' 1 connection:  smtp-source %.0f msg/s, sendwerk %.0f msg/s, ratio %.2f (target >= 0.8)\n' "$s1" "$w1" "$(echo "$w1 / $s1" | bc -l)"
