#!/usr/bin/env bash
# make bench: the data-plane comparison in the lab (tender, nginx, HAProxy,
# direct, the mesh path) and the control plane at scale; writes
# bench/RESULTS.md. Needs root. BENCH_DURATION (10s) is each load run;
# BENCH_CP_CLIENTS ("100 1000") the numbers of simulated proxies;
# BENCH_PROFILE=DIR keeps CPU and heap profiles of the sidecar's flat-out
# runs; BENCH_SIDECAR_ENV ("GOGC=50 ...") is environment for the sidecars.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: needs root (network namespaces, iptables)" >&2; exit 1; }
missing=()
for p in nginx haproxy wrk; do command -v "$p" >/dev/null || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
out=bench/RESULTS.md
# The soak's figures (make soak) are not measured here: kept as they are.
soak=$(sed -n '/^## Soak/,$p' "$out" 2>/dev/null || true)
profile=()
if [ -n "${BENCH_PROFILE:-}" ]; then mkdir -p "$BENCH_PROFILE"; profile=(--profile "$BENCH_PROFILE"); fi
for e in ${BENCH_SIDECAR_ENV:-}; do profile+=(--sidecar-env "$e"); done
go run ./bench/dataplane --bin bin --fortio .tools/fortio --duration "${BENCH_DURATION:-10s}" --out "$out" "${profile[@]}"
{
  echo "## Control plane"
  echo
  echo "\`bench/xdsload\`: the control plane binary serving a mesh.yaml of services × 10 endpoints to simulated"
  echo "proxies (one gRPC connection each, in one process on the same 2 cores) that ACK what they get. Wildcard"
  echo "proxies (delta, sotw) subscribe to every cluster and its endpoints, as Envoy or \`--xds-mode=wildcard\`;"
  echo "on-demand proxies, as tender's default sidecar, to the address indexes of 5 services each and what"
  echo "they name. One endpoint of one service is changed in mesh.yaml, five times; \"change → last proxy\" runs from"
  echo "the file's write (the control plane watches it, parses all of it, waits --debounce 10ms) until the last"
  echo "proxy using that service received the new endpoints; \"others reached\" counts pushes to proxies that do not use it."
  echo
  header=-header
  for n in ${BENCH_CP_CLIENTS:-100 1000}; do
    for mode in delta sotw; do
      echo "bench: control plane, $n $mode proxies..." >&2
      go run ./bench/xdsload --controlplane bin/controlplane --clients "$n" --mode "$mode" -markdown $header
      header=
    done
  done
  # clients:services:files
  for n in ${BENCH_CP_ONDEMAND:-1000:1000:1 10000:10000:1 10000:10000:100}; do
    IFS=: read -r clients services files <<<"$n"
    echo "bench: control plane, $clients on-demand proxies, $services services in $files file(s)..." >&2
    go run ./bench/xdsload --controlplane bin/controlplane --clients "$clients" --services "$services" --files "$files" --mode ondemand --changes 10 -markdown
  done
  echo
} >>"$out"
if [ -n "$soak" ]; then printf '%s\n' "$soak" >>"$out"; fi
echo "bench: wrote $out"
