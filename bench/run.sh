#!/usr/bin/env bash
# Hookgate load benchmark, one command from the repository root:
#
#   bash bench/run.sh                      # the full table, ~1 minute
#   bash bench/run.sh -profile /tmp/prof   # also CPU-profile each gateway cell
#   bash bench/run.sh -backlog 100000,1000000   # backlog mode (issue 11), several minutes
#   bash bench/run.sh -nats                # also the gateway on NATS JetStream, 1 node and 3, ~3 minutes
#
# It builds ./cmd/caddy and the load tool into a temporary directory, then runs
# bench/load, which starts a trivial upstream, one fresh Caddy per cell
# (reverse_proxy, then webhook_ingest, for each body size) and 64 senders, all
# on 127.0.0.1, with bounded time and request counts. With -nats it also
# builds nats-server (the module's version in go.mod) and passes it to the
# load tool as -nats-server, which adds two gateway cells per size on fresh
# nats-server processes. Other arguments go to the load tool (see
# `go run ./bench/load -h`); with -rounds N also raise -timeout and
# BENCH_TIMEOUT (the outer bound, default 200s; 540s with -nats; 5000s with
# -backlog, whose own -timeout defaults to two minutes per size plus a
# millisecond per event).
# Nothing is installed; Go modules come from the module cache or the Go module proxy.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/hookgate-bench-bin.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "building caddy and the load tool ..." >&2
go build -o "$tmp/caddy" ./cmd/caddy
go build -o "$tmp/load" ./bench/load

# Not exec: the trap removes the binaries afterwards. The load tool stops its
# Caddy and nats-server processes on SIGINT/SIGTERM and they die with it
# (PDEATHSIG) anyway.
outer=200s
args=()
for arg in "$@"; do
	case "$arg" in
	-backlog | --backlog | -backlog=* | --backlog=*)
		outer=5000s
		args+=("$arg")
		;;
	-nats | --nats)
		echo "building nats-server ..." >&2
		go build -o "$tmp/nats-server" github.com/nats-io/nats-server/v2
		[ "$outer" = 5000s ] || outer=540s
		args+=(-nats-server "$tmp/nats-server")
		;;
	*) args+=("$arg") ;;
	esac
done
status=0
timeout --signal=TERM --kill-after=10s "${BENCH_TIMEOUT:-$outer}" "$tmp/load" -caddy "$tmp/caddy" "${args[@]}" || status=$?
exit "$status"
