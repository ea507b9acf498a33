# tender — see README.md. `make demo` and `make test` are the two commands.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
TOOLS := $(CURDIR)/.tools
GOLANGCI_LINT_VERSION := v2.15.0
H2SPEC_VERSION := v2.2.1+incompatible
# Helm 3.19 is built on the same Kubernetes libraries (v0.34) as the
# kube-apiserver the tests run.
HELM_VERSION := v3.19.0
FORTIO_VERSION := v1.66.1
# The sidecar runs in every pod, so it leaves out what it never calls:
# go-control-plane's generated validation code (disable_pgv) and grpc-go's
# x/net/trace support (grpcnotrace; its html/template keeps every exported
# method of every type in the binary). 35 MB → 24 MB, idle RSS −5 MiB.
# build/sidecar.Dockerfile and e2e build with the same tags (cmd/sidecar's
# TestBuildTags checks). Like the image, bin/sidecar is static (no libc
# mapped: 1.2 MiB less RSS) and stripped.
SIDECAR_TAGS := disable_pgv,grpcnotrace
# Jaeger's and Consul's versions are pinned in hack/tools/*/go.mod.
# The e2e tests run with the race detector too; give them room.
TEST_TIMEOUT ?= 20m
# make test runs each fuzz target for this many inputs: a count, not a
# duration, because go1.26's fuzz coordinator can fail a target with
# "context deadline exceeded" when a -fuzztime duration ends under load
# (golang/go#75804, fixed in go1.27). make fuzz runs FUZZTIME each.
TEST_FUZZTIME ?= 2000x
FUZZTIME ?= 60s

.PHONY: images demo-k8s help fuzz bench tools-fortio all build test test-unit test-e2e lint tools tools-lint tools-h2spec tools-jaeger tools-consul tools-kube tools-eureka-js demo clean proto

all: build

## help: this list
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

## build: compile every binary into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $$($(GO) list ./cmd/... | grep -v '/cmd/sidecar$$')
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(SIDECAR_TAGS) -ldflags="-s -w" -o $(BIN)/ ./cmd/sidecar
	$(GO) build -o $(BIN)/ ./examples/greeter/cmd/...

## test: the whole suite (unit, race, e2e) — what CI runs
test: lint build tools images
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	@echo "each Go benchmark once, so they cannot rot (numbers: make bench)"
	$(GO) test -run '^$$' -bench . -benchtime 1x $$($(GO) list ./... | grep -v /e2e)
	@echo "each fuzz target for $(TEST_FUZZTIME) inputs (longer: make fuzz)"
	FUZZTIME=$(TEST_FUZZTIME) ./hack/fuzz.sh

# The images, built without a Docker daemon (hack/images, with
# go-containerregistry) from static binaries; named as the chart names
# them, tagged with its appVersion. The sidecar's base is Debian's
# iptables package and its dependencies, unpacked once into .tools/.
IMAGE_VERSION := $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*/\1/p' charts/tender/Chart.yaml)
IMAGE_REGISTRY ?= ghcr.io/tender-mesh
## images: the container images (control plane, sidecar, greeter, pause) as OCI archives in bin/images/
images: $(TOOLS)/sidecar-base/.packages
	@mkdir -p $(BIN)/static
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/static/ ./cmd/controlplane ./examples/greeter/cmd/... ./hack/pause
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(SIDECAR_TAGS) -ldflags="-s -w" -o $(BIN)/static/ ./cmd/sidecar
	$(GO) run ./hack/images --bin $(BIN)/static --sidecar-base $(TOOLS)/sidecar-base --registry $(IMAGE_REGISTRY) --version $(IMAGE_VERSION) --out $(BIN)/images
$(TOOLS)/sidecar-base/.packages: hack/sidecar-base.sh
	hack/sidecar-base.sh $(TOOLS)/sidecar-base

## fuzz: every fuzz target for FUZZTIME (default 60s) each
fuzz:
	FUZZTIME=$(FUZZTIME) ./hack/fuzz.sh

## test-unit: everything but e2e, fast
test-unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

## test-e2e: end-to-end tests only
test-e2e: build tools images
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./e2e/...

# The soak: ~500 req/s of HTTP and gRPC through mutual-TLS sidecars under
# endpoint churn, pod kills and control-plane restarts; no request may fail,
# RSS may not drift, goroutines and open files must come back at rest. The
# sidecars and control plane are built as by `make build` (no race detector).
# TENDER_SOAK_PROFILES=DIR keeps their goroutine and heap profiles at rest.
## soak: the e2e soak for SOAK_DURATION (default 10m; make test runs 1m); prints its figures for bench/RESULTS.md (root)
SOAK_DURATION ?= 10m
SOAK_TIMEOUT ?= 1h
.PHONY: soak
soak:
	@report=$$(mktemp); \
	TENDER_SOAK=$(SOAK_DURATION) TENDER_SOAK_REPORT=$$report $(GO) test -race -count=1 -timeout $(SOAK_TIMEOUT) -run '^TestSoak$$' -v ./e2e/; \
	status=$$?; \
	echo "--- for bench/RESULTS.md: make soak SOAK_DURATION=$(SOAK_DURATION) ---"; cat $$report; rm -f $$report; \
	exit $$status

## lint: gofmt, go vet and golangci-lint (built into .tools/ first)
lint: tools-lint
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/golangci-lint run ./...

## tools: build the slow external tools into .tools/ (reused when present)
tools: tools-lint tools-h2spec tools-jaeger tools-consul tools-kube tools-eureka-js

tools-lint: $(TOOLS)/golangci-lint
$(TOOLS)/golangci-lint:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

tools-h2spec: $(TOOLS)/h2spec
$(TOOLS)/h2spec:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/summerwind/h2spec/cmd/h2spec@$(H2SPEC_VERSION)

# Jaeger v2 (all-in-one) through a wrapper module; about 8 minutes cold.
tools-jaeger: $(TOOLS)/jaeger
$(TOOLS)/jaeger: hack/tools/jaeger/go.mod hack/tools/jaeger/go.sum
	@mkdir -p $(TOOLS)
	@echo "building Jaeger into $(TOOLS)/jaeger (several minutes the first time)"
	cd hack/tools/jaeger && $(GO) build -o $(TOOLS)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

# A Consul agent through a wrapper main (Consul's own main imports a module
# the proxy does not carry); about 5 minutes cold.
tools-consul: $(TOOLS)/consul
$(TOOLS)/consul: hack/tools/consul/go.mod hack/tools/consul/go.sum hack/tools/consul/main.go
	@mkdir -p $(TOOLS)
	@echo "building Consul into $(TOOLS)/consul (several minutes the first time)"
	cd hack/tools/consul && GONOSUMDB=github.com/hashicorp $(GO) build -o $(TOOLS)/consul .

# eureka-js-client from npm, the real Eureka client the e2e tests drive
# tender's Eureka server emulation with; pinned by
# hack/tools/eureka-js/package-lock.json. Seconds, with node and npm.
EUREKA_JS := $(TOOLS)/eureka-js/node_modules/eureka-js-client/package.json
tools-eureka-js: $(EUREKA_JS)
$(EUREKA_JS): hack/tools/eureka-js/package.json hack/tools/eureka-js/package-lock.json
	@mkdir -p $(TOOLS)/eureka-js
	cp hack/tools/eureka-js/package.json hack/tools/eureka-js/package-lock.json $(TOOLS)/eureka-js/
	cd $(TOOLS)/eureka-js && npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

# The Kubernetes components through a wrapper module that pins
# k8s.io/kubernetes' staging modules: kube-apiserver (about 12 minutes
# cold) for every Kubernetes e2e test, and the one-node cluster's kubelet,
# kube-controller-manager, kube-scheduler, kube-proxy and kubectl (about 5
# more: they share most packages); CoreDNS with the plugins the cluster's
# DNS uses; Helm. etcd comes from Debian's etcd-server, containerd, runc
# and the CNI plugins from Debian's containerd, runc and
# containernetworking-plugins (.ci/run installs them).
KUBE_NODE := kubelet kube-controller-manager kube-scheduler kube-proxy kubectl
tools-kube: $(TOOLS)/kube-apiserver $(TOOLS)/kubelet $(TOOLS)/coredns $(TOOLS)/helm
# The version they report (/version; Helm checks a chart's kubeVersion
# against it), as Kubernetes' own build stamps it.
KUBE_VERSION_LDFLAGS = -X k8s.io/component-base/version.gitVersion=v1.34.4 \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34
$(TOOLS)/kube-apiserver: hack/tools/kube/go.mod hack/tools/kube/go.sum
	@mkdir -p $(TOOLS)
	@echo "building kube-apiserver into $(TOOLS)/kube-apiserver (several minutes the first time)"
	cd hack/tools/kube && $(GO) build -ldflags "$(KUBE_VERSION_LDFLAGS)" -o $(TOOLS)/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
# One go build for the node's components: compiled once, linked each.
$(TOOLS)/kubelet: hack/tools/kube/go.mod hack/tools/kube/go.sum $(TOOLS)/kube-apiserver
	@echo "building $(KUBE_NODE) into $(TOOLS)/"
	cd hack/tools/kube && $(GO) build -ldflags "$(KUBE_VERSION_LDFLAGS)" -o $(TOOLS)/ $(addprefix k8s.io/kubernetes/cmd/,$(KUBE_NODE))
$(TOOLS)/coredns: hack/tools/coredns/go.mod hack/tools/coredns/go.sum hack/tools/coredns/main.go
	@mkdir -p $(TOOLS)
	cd hack/tools/coredns && $(GO) build -o $(TOOLS)/coredns .
$(TOOLS)/helm:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

# fortio (Istio's load generator) for make bench; newer versions need a
# module the proxy refuses.
tools-fortio: $(TOOLS)/fortio
$(TOOLS)/fortio:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install fortio.org/fortio@$(FORTIO_VERSION)

## bench: tender against direct traffic, nginx and HAProxy in the lab, and
## the control plane at scale (root; about 10 minutes); writes bench/RESULTS.md
bench: build tools-fortio
	./bench/run.sh

## demo: a small mesh in the lab (network namespaces): control plane, three greeters, a frontend, a client, Jaeger, Prometheus
demo: build tools-jaeger
	./hack/demo.sh

# The same mesh in a one-node Kubernetes cluster made of the real
# components (make tools builds them, make images the images), for
# DEMO_DURATION (default 1h) or until Ctrl-C; it prints the kubectl
# commands to look at it. Root, like make demo.
DEMO_DURATION ?= 1h
## demo-k8s: the mesh in a one-node Kubernetes cluster (kubelet, containerd, helm install, injected pods); prints the kubectl commands to look at it
demo-k8s: tools images
	TENDER_DEMO_K8S=$(DEMO_DURATION) $(GO) test -count=1 -timeout 0 -run '^TestDemoK8s$$' -v ./e2e/

## proto: regenerate examples/greeter/pb
proto:
	$(GO) generate ./examples/greeter/pb

clean:
	rm -rf $(BIN)
