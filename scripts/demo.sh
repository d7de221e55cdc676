#!/usr/bin/env bash
# make demo: two nodes in one process (Examples/Demo), then `msgnet` processes:
#   1. one listens, the other identifies and pings it;
#   2. messages: `listen --print-protocol /chat/1.0.0` + `send`, and a request/reply (`request`);
#   3. one listener on a TCP and a UDP address receives the same `send` over each path, and a
#      ping over UDP (/msgnet/ping/1.0.0 request/reply round trips).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product Demo >/dev/null
swift build --product msgnet >/dev/null
bin=$(swift build --show-bin-path)
msgnet="$bin/msgnet"

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# start_listener NAME ARGS…: runs `msgnet listen ARGS…` in the background, output in $tmp/NAME.
start_listener() {
    local name=$1
    shift
    "$msgnet" listen "$@" >"$tmp/$name" 2>"$tmp/$name.err" &
    pids+=($!)
}

# wait_lines NAME N: waits (at most 30 s) until $tmp/NAME has N complete lines.
wait_lines() {
    local file="$tmp/$1" want=$2
    for _ in $(seq 1 300); do
        [ "$(wc -l <"$file")" -ge "$want" ] && return 0
        sleep 0.1
    done
    echo "demo: timed out waiting for $want line(s) in $1" >&2
    cat "$file" "$file.err" >&2
    exit 1
}

# stop_listener NAME: SIGINT to the newest listener, bounded wait.
stop_listener() {
    local pid=${pids[-1]}
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "listener $1 stopped"
}

echo "== Examples/Demo: two nodes in one process"
"$bin/Demo"
echo

echo "== two msgnet processes: identify and ping"
start_listener node
wait_lines node 1
addr=$(head -n 1 "$tmp/node")
echo "listener: $addr"
echo "\$ msgnet identify $addr"
"$msgnet" identify "$addr"
echo "\$ msgnet ping $addr --count 3"
"$msgnet" ping "$addr" --count 3
stop_listener node
echo

echo "== messages: listen --print-protocol /chat/1.0.0, then send and request"
start_listener chat --print-protocol /chat/1.0.0
wait_lines chat 1
addr=$(head -n 1 "$tmp/chat")
echo "listener: $addr"
echo "\$ msgnet send $addr --protocol /chat/1.0.0 hello from msgnet"
"$msgnet" send "$addr" --protocol /chat/1.0.0 hello from msgnet --key "$tmp/sender.key"
wait_lines chat 2
echo "listener printed: $(sed -n 2p "$tmp/chat")"
echo "\$ msgnet request $addr --protocol /chat/1.0.0 echo this back"
echo "reply: $("$msgnet" request "$addr" --protocol /chat/1.0.0 echo this back --timeout 5)"
wait_lines chat 3
echo "listener printed: $(sed -n 3p "$tmp/chat")"
stop_listener chat
echo

echo "== one listener, two paths: the same handler receives a send over TCP and over UDP"
start_listener both --listen /ip4/127.0.0.1/tcp/0 --listen /ip4/127.0.0.1/udp/0 --print-protocol /chat/1.0.0 --print-path
wait_lines both 2
tcp=$(sed -n 1p "$tmp/both")
udp=$(sed -n 2p "$tmp/both")
echo "listener: $tcp"
echo "listener: $udp"
echo "\$ msgnet send $tcp --protocol /chat/1.0.0 hello over tcp"
"$msgnet" send "$tcp" --protocol /chat/1.0.0 hello over tcp --key "$tmp/sender.key"
echo "\$ msgnet send $udp --protocol /chat/1.0.0 hello over udp"
"$msgnet" send "$udp" --protocol /chat/1.0.0 hello over udp --key "$tmp/sender.key"
wait_lines both 4
echo "listener printed (sender, protocol, the path it came on, text):"
sed -n 3,4p "$tmp/both" | sed 's/^/  /'
if ! grep -q " /chat/1.0.0 stream hello over tcp$" "$tmp/both" ||
  ! grep -q " /chat/1.0.0 datagram hello over udp$" "$tmp/both"; then
  echo "demo: the handler did not get one message over each path" >&2
  exit 1
fi
echo "\$ msgnet ping $udp --count 3"
"$msgnet" ping "$udp" --count 3
stop_listener both
