# Terrace build, test and demo. Run as root on Debian: `make demo` (main job) and `make test`.
GO      ?= go
BIN     := bin
BINARIES := terrace-node terracectl terrace-cni terrace-testbed
GOFLAGS ?=
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build deps test test-unit test-root bench demo demo-down clean fmt vet

all: build

# System packages the binaries, tests, demo and benchmarks use.
DEB_PACKAGES := iptables ipset bird2 iproute2 iperf3 iputils-ping procps psmisc tcpdump curl python3 util-linux
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all system packages present"; fi

build:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/...
	@ln -sf terrace-cni $(BIN)/terrace-ipam

vet:
	$(GO) vet ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# All tests. Root-only tests run because make test runs as root; they skip with a message otherwise.
test: deps build fmt vet
	$(GO) test -count=1 -timeout 25m ./...
	@for t in $(wildcard ../shared/acceptance/[0-9]*); do :; done

bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 1x ./... 

demo: deps build
	$(BIN)/terrace-testbed demo

demo-down: build
	$(BIN)/terrace-testbed down

clean:
	rm -rf $(BIN)
