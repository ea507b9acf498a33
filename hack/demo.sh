#!/usr/bin/env bash
# make demo: a small mesh in the lab (network namespaces joined by a
# bridge, sealed from the host's network): the control plane, three
# greeter pods, a frontend pod and a client pod, each meshed pod with its
# sidecar and real iptables capture, plus Jaeger and Prometheus. The client
# sends steady traffic to the frontend, which asks the greeters; a live
# summary from Prometheus is printed every few seconds.
#
# Needs root (network namespaces, iptables). Environment:
#   DEMO_DURATION=30s  stop after this long (default: until Ctrl-C)
#   DEMO_BIN=DIR       binaries to run (default: bin/, built by make demo)
#   DEMO_PREFIX=NAME   namespace prefix (default: tender-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${DEMO_BIN:-$ROOT/bin}
PREFIX=${DEMO_PREFIX:-tender-demo}
DIR=$ROOT/.demo/$PREFIX
TOOLS=$ROOT/.tools
mkdir -p "$DIR"

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root: the lab is made of network namespaces with iptables rules (sudo make demo)"
for cmd in ip iptables-nft-restore setpriv curl; do
  command -v "$cmd" >/dev/null || die "needs $cmd (apt-get install iproute2 iptables util-linux curl)"
done
PROMETHEUS=$(command -v prometheus || true)
[ -n "$PROMETHEUS" ] || die "needs prometheus (apt-get install prometheus)"
[ -x "$TOOLS/jaeger" ] || die "needs Jaeger in .tools (make tools-jaeger)"
for b in controlplane sidecar greeter greeter-client tenderctl; do
  [ -x "$BIN/$b" ] || die "needs $BIN/$b (make build)"
done

# One demo at a time: the lock is held for as long as this script runs.
exec 9>"$DIR.lock"
if ! flock -n 9; then
  die "another 'make demo' is running (lock $DIR.lock); stop it (Ctrl-C) first"
fi

NETNS=(br cp obs greeter-1 greeter-2 greeter-3 frontend client)
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  say "stopping..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Anything else still running in the lab's namespaces.
  for n in "${NETNS[@]}"; do
    if ip netns list | grep -qw "$PREFIX-$n"; then
      ip netns pids "$PREFIX-$n" 2>/dev/null | xargs -r kill 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  for n in "${NETNS[@]}"; do
    ip netns del "$PREFIX-$n" 2>/dev/null || true
  done
  rm -rf "${SECRETS:-}"
  say "stopped: namespaces, their iptables rules and processes are gone; logs are in $DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A demo killed without its cleanup left namespaces: remove them first.
for n in "${NETNS[@]}"; do
  if ip netns list | grep -qw "$PREFIX-$n"; then
    ip netns pids "$PREFIX-$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$PREFIX-$n"
  fi
done

SUBNET=10.77.0
CP=$SUBNET.2
OBS=$SUBNET.3
GREETER_VIP=10.96.0.10
FRONTEND_VIP=10.96.0.20

say "building the lab (namespaces $PREFIX-*)"
ip netns add "$PREFIX-br"
ip -n "$PREFIX-br" link set lo up
ip -n "$PREFIX-br" link add br0 type bridge
ip -n "$PREFIX-br" link set br0 up
addpod() { # name n
  local ns=$PREFIX-$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$PREFIX-br" link add "v$2" type veth peer name eth0 netns "$ns"
  ip -n "$PREFIX-br" link set "v$2" master br0 up
  ip -n "$ns" addr add "$SUBNET.$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add 10.96.0.0/16 dev eth0
}
addpod cp 2
addpod obs 3
addpod greeter-1 11
addpod greeter-2 12
addpod greeter-3 13
addpod frontend 15
addpod client 20

# run NAME POD CMD...: start CMD in POD's namespace, logging to DIR/NAME.log.
run() {
  local name=$1 ns=$PREFIX-$2
  shift 2
  ip netns exec "$ns" "$@" >"$DIR/$name.log" 2>&1 &
  pids+=($!)
}
# sidecar POD WORKLOAD: capture rules and the sidecar (UID 1337).
sidecar() {
  ip netns exec "$PREFIX-$1" "$BIN/sidecar" init --exclude-outbound-ports 4317,4318 >"$DIR/$1-init.log" 2>&1 ||
    die "sidecar init in $1 failed: $(cat "$DIR/$1-init.log")"
  # Mutual TLS: xDS and the certificate over the control plane's TLS
  # port, the workload's bootstrap token proving who it is.
  printf 'demo-token-%s\n' "$2" >"$SECRETS/$2.token"
  run "$1-sidecar" "$1" setpriv --reuid=1337 --regid=1337 --clear-groups --pdeathsig SIGKILL \
    "$BIN/sidecar" run --xds-addr "$CP:15012" --xds-tls --ca-root-file "$SECRETS/root-cert.pem" --token-file "$SECRETS/$2.token" \
    --controlplane-identity spiffe://cluster.local/ns/tender-system/sa/tender-controlplane \
    --pod-name "$1" --pod-namespace default --workload "$2" \
    --otlp-endpoint "$OBS:4317" --trace-sampling 1 --log-format json
}
# wait_http POD URL WHAT: poll until URL answers 200 inside POD.
wait_http() {
  printf 'demo: waiting for %s ' "$3"
  for _ in $(seq 1 300); do
    if ip netns exec "$PREFIX-$1" curl -fsS -o /dev/null --max-time 1 "$2" 2>/dev/null; then echo ok; return; fi
    printf .
    sleep 0.2
  done
  echo
  die "$3 did not come up; see $DIR/*.log"
}

# What the sidecars (UID 1337) read: their tokens and the CA's root, in a
# directory they can reach wherever the checkout is.
SECRETS=$(mktemp -d /tmp/tender-demo.XXXXXX)
chmod 755 "$SECRETS"
cat >"$DIR/bootstrap-tokens" <<TOKENS
# token namespace service-account: who a sidecar outside Kubernetes is
demo-token-greeter default greeter
demo-token-frontend default frontend
demo-token-client default client
TOKENS
cat >"$DIR/mesh.yaml" <<YAML
mtls:
  mode: STRICT
authorization:
  - name: greeter-from-frontend
    services: [greeter]
    rules:
      - from: [{principals: ["spiffe://cluster.local/ns/default/sa/frontend"]}]
services:
  - name: greeter
    namespace: default
    vip: $GREETER_VIP
    meshed: true
    ports: [{name: http, port: 80, protocol: HTTP}]
    endpoints:
      - {address: $SUBNET.11, port: 8080}
      - {address: $SUBNET.12, port: 8080}
      - {address: $SUBNET.13, port: 8080}
  - name: frontend
    namespace: default
    vip: $FRONTEND_VIP
    meshed: true
    ports: [{name: http, port: 80, protocol: HTTP}]
    endpoints:
      - {address: $SUBNET.15, port: 8080}
YAML
cat >"$DIR/prometheus.yml" <<YAML
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: sidecars
    static_configs:
      - {targets: ["$SUBNET.11:15090"], labels: {pod: greeter-1}}
      - {targets: ["$SUBNET.12:15090"], labels: {pod: greeter-2}}
      - {targets: ["$SUBNET.13:15090"], labels: {pod: greeter-3}}
      - {targets: ["$SUBNET.15:15090"], labels: {pod: frontend}}
      - {targets: ["$SUBNET.20:15090"], labels: {pod: client}}
  - job_name: controlplane
    static_configs: [{targets: ["$CP:15014"]}]
YAML

say "starting the control plane, Jaeger and Prometheus"
run controlplane cp "$BIN/controlplane" --config-file "$DIR/mesh.yaml" --xds-addr 0.0.0.0:15010 --xds-tls-addr 0.0.0.0:15012 \
  --metrics-addr 0.0.0.0:15014 --debounce 50ms --ca-dir "$DIR/ca" --bootstrap-tokens-file "$DIR/bootstrap-tokens"
run jaeger obs env JAEGER_LISTEN_HOST=0.0.0.0 "$TOOLS/jaeger"
rm -rf "$DIR/prometheus-data"
run prometheus obs "$PROMETHEUS" --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prometheus-data" \
  --web.listen-address=0.0.0.0:9090 --log.level=warn
wait_http cp "http://127.0.0.1:15014/readyz" "the control plane"
cp "$DIR/ca/root-cert.pem" "$SECRETS/root-cert.pem"

say "starting three greeters and a frontend, each with its sidecar"
for i in 1 2 3; do
  run "greeter-$i" "greeter-$i" "$BIN/greeter" --instance "greeter-$i" --http-addr :8080 --grpc-addr "" \
    --otlp-endpoint "$OBS:4317" --service-name greeter
  sidecar "greeter-$i" greeter
done
run frontend frontend "$BIN/greeter" --instance frontend --http-addr :8080 --grpc-addr "" \
  --backend "http://$GREETER_VIP" --otlp-endpoint "$OBS:4317" --service-name frontend
sidecar frontend frontend
sidecar client client
for p in greeter-1 greeter-2 greeter-3 frontend client; do
  wait_http "$p" "http://127.0.0.1:15000/ready" "the $p sidecar"
done
wait_http obs "http://127.0.0.1:16686/api/services" "Jaeger"
wait_http obs "http://127.0.0.1:9090/-/ready" "Prometheus"

say "sending steady traffic: client -> frontend ($FRONTEND_VIP) -> greeter ($GREETER_VIP)"
: >"$DIR/trace-ids"
run client client "$BIN/greeter-client" --http "http://$FRONTEND_VIP" --count 1000000000 --concurrency 2 --interval 100ms \
  --otlp-endpoint "$OBS:4317" --service-name client --trace-ids "$DIR/trace-ids"

sleep 3
TRACE=$(head -n 1 "$DIR/trace-ids" 2>/dev/null || true)
cat <<MSG

Where to look (the lab is sealed from the host's network: reach it with
ip netns exec, as you would kubectl exec into a pod):
  live summary      ip netns exec $PREFIX-obs $BIN/tenderctl stat --prometheus 127.0.0.1:9090 --window 10s --by-pod
  Prometheus        ip netns exec $PREFIX-obs curl -s 'http://127.0.0.1:9090/api/v1/query?query=sum(rate(tender_requests_total[1m]))by(destination_service)'
  Jaeger traces     ip netns exec $PREFIX-obs curl -s 'http://127.0.0.1:16686/api/traces?service=client&limit=5'
  one trace         ip netns exec $PREFIX-obs curl -s http://127.0.0.1:16686/api/traces/${TRACE:-TRACE_ID}
  sidecars in sync  ip netns exec $PREFIX-cp $BIN/tenderctl proxy-status
  client's config   ip netns exec $PREFIX-client $BIN/tenderctl proxy-config endpoints 127.0.0.1
  client's identity ip netns exec $PREFIX-client curl -s http://127.0.0.1:15000/certs
  mTLS and policy   every hop is mutual TLS (STRICT); only the frontend may call the greeter:
                    ip netns exec $PREFIX-client curl -s http://$GREETER_VIP/greet?name=x   (403 RBAC: access denied)
  mesh config       $DIR/mesh.yaml (edit it: the change is pushed within ~100 ms)
  logs              $DIR/*.log

Ctrl-C stops the demo and removes everything it made.
MSG

end=0
if [ -n "${DEMO_DURATION:-}" ]; then
  end=$(($(date +%s) + ${DEMO_DURATION%s}))
fi
while :; do
  sleep 5
  echo
  ip netns exec "$PREFIX-obs" "$BIN/tenderctl" stat --prometheus 127.0.0.1:9090 --window 10s --by-pod || true
  if [ "$end" -gt 0 ] && [ "$(date +%s)" -ge "$end" ]; then break; fi
done
