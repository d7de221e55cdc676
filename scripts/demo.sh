#!/usr/bin/env bash
# make demo: two nodes in one process (Examples/Demo), then two `msgnet` processes:
# one listens, the other identifies and pings it.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product Demo >/dev/null
swift build --product msgnet >/dev/null
bin=$(swift build --show-bin-path)
echo "== Examples/Demo: two nodes in one process"
"$bin/Demo"
echo
echo "== two msgnet processes"
out=$(mktemp)
"$bin/msgnet" listen --listen /ip4/127.0.0.1/tcp/0 >"$out" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 100); do [ -s "$out" ] && break; sleep 0.1; done
addr=$(head -n 1 "$out")
echo "listener: $addr"
echo "\$ msgnet identify $addr"
"$bin/msgnet" identify "$addr"
echo "\$ msgnet ping $addr --count 3"
"$bin/msgnet" ping "$addr" --count 3
kill -INT $pid
wait $pid || true
echo "listener stopped"
