#!/usr/bin/env bash
# make demo: a small mesh on loopback. The control plane reads a mesh.yaml
# with three greeter instances; a proxyless gRPC client (xds:/// target)
# gets its config from the control plane and balances across them.
#
# DEMO_DURATION=30s limits the run (default: until Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DIR=$PWD/.demo
LOCK=$DIR/lock
mkdir -p "$DIR"

command -v curl >/dev/null || { echo "demo: needs curl (apt-get install curl)" >&2; exit 1; }

exec 9>"$LOCK"
if ! flock -n 9; then
  echo "demo: another 'make demo' is running (lock $LOCK); stop it first." >&2
  exit 1
fi

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo: stopping..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo: stopped; logs are in $DIR"
}
trap cleanup EXIT INT TERM

# Loopback ports of our own, away from the well-known mesh ports so a demo
# can run beside a real install.
XDS=127.0.0.1:25010
METRICS=127.0.0.1:25014
cat >"$DIR/mesh.yaml" <<YAML
services:
  - name: greeter
    namespace: default
    ports:
      - {name: grpc, port: 8080, protocol: GRPC}
    endpoints:
      - {address: 127.0.0.1, port: 28081, zone: z1}
      - {address: 127.0.0.1, port: 28082, zone: z1}
      - {address: 127.0.0.1, port: 28083, zone: z1}
YAML

echo "demo: starting the control plane (xds $XDS, metrics $METRICS)"
"$BIN/controlplane" --xds-addr "$XDS" --metrics-addr "$METRICS" --config-file "$DIR/mesh.yaml" \
  >"$DIR/controlplane.log" 2>&1 &
pids+=($!)
for i in 1 2 3; do
  "$BIN/greeter" --instance "greeter-$i" --grpc-addr "127.0.0.1:2808$i" --http-addr "127.0.0.1:2809$i" \
    >"$DIR/greeter-$i.log" 2>&1 &
  pids+=($!)
done

printf 'demo: waiting for the control plane'
for _ in $(seq 1 100); do
  if curl -fsS "http://$METRICS/readyz" >/dev/null 2>&1; then break; fi
  printf .; sleep 0.1
done
echo
curl -fsS "http://$METRICS/readyz" >/dev/null || { echo "demo: control plane not ready; see $DIR/controlplane.log" >&2; exit 1; }

cat >"$DIR/bootstrap.json" <<JSON
{
  "xds_servers": [{"server_uri": "$XDS", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "demo-client", "locality": {"zone": "z1"}}
}
JSON

cat <<MSG

demo: a mesh of three greeters is up. A proxyless gRPC client asks the
control plane for xds:///greeter.default.svc.cluster.local:8080 and
balances round robin across the instances:

MSG
export GRPC_XDS_BOOTSTRAP="$DIR/bootstrap.json"
"$BIN/greeter-client" --target xds:///greeter.default.svc.cluster.local:8080 --name demo --count 30 | tail -n 5

cat <<MSG

Where to look:
  control plane metrics  curl -s http://$METRICS/metrics | grep ^tender_
  served xDS config      curl -s http://$METRICS/debug/config
  connected proxies      curl -s http://$METRICS/debug/proxies
  readiness              curl -s http://$METRICS/readyz
  mesh config            $DIR/mesh.yaml (edit it: the change is pushed within ~100 ms)
  logs                   $DIR/*.log
  traces                 not yet: tracing arrives with the sidecar (see README, "What tender does not do yet")

demo: sending one request per second; Ctrl-C stops the demo and everything it started.
MSG

end=0
if [ -n "${DEMO_DURATION:-}" ]; then
  end=$(( $(date +%s) + ${DEMO_DURATION%s} ))
fi
while :; do
  if [ "$end" -gt 0 ] && [ "$(date +%s)" -ge "$end" ]; then break; fi
  "$BIN/greeter-client" --target xds:///greeter.default.svc.cluster.local:8080 --name demo --count 10 2>&1 | tail -n 1 || true
  sleep 1
done
