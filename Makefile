# Terrace build, test and demo. Run as root on Debian: `make demo` (main job) and `make test`.
GO      ?= go
BIN     := bin
BINARIES := terrace-node terracectl terrace-cni terrace-testbed
GOFLAGS ?=
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build deps test acceptance bench demo demo-down clean fmt vet bpf

all: build

# System packages the binaries, tests, demo and benchmarks use.
DEB_PACKAGES := iptables ipset bird2 iproute2 iperf3 iputils-ping procps psmisc tcpdump curl python3 util-linux
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all system packages present"; fi

# Static binaries (no cgo): nothing to match on the host's libc, and each short-lived terrace-cni
# process skips the dynamic loader (about 5 ms of CPU per call measured here, see docs/benchmarks.md).
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/...
	@ln -sf terrace-cni $(BIN)/terrace-ipam

vet:
	$(GO) vet ./...

# felix's fast path is a BPF program; its object is committed beside the source so building and
# testing need no clang. After changing fastpath.c, rebuild it (Debian: clang llvm libbpf-dev).
# DWARF is stripped; the BTF that CO-RE and the kfunc calls need stays.
BPF_DIR := felix/dataplane/fastpath/bpf
bpf:
	clang -O2 -g -Wall -Werror -target bpf -I/usr/include/$$(uname -m)-linux-gnu -c $(BPF_DIR)/fastpath.c -o $(BPF_DIR)/fastpath_bpfel.o
	llvm-strip -g $(BPF_DIR)/fastpath_bpfel.o

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# All tests. Root-only tests run because make test runs as root; they skip with a message otherwise.
test: deps build fmt vet
	$(GO) test -count=1 -timeout 25m ./...
	$(MAKE) --no-print-directory acceptance

# The shared smoke checks of the contract for the issues that are resolved; they run one at a time
# after the Go tests because they count the machine's namespaces and daemons before and after.
ACCEPTANCE ?= 4-testbed 5-bgp 7-felix
acceptance: build
	@if [ ! -d ../shared/acceptance ]; then echo "acceptance: ../shared/acceptance not found, nothing to run"; exit 0; fi; \
	fails=0; for t in $(ACCEPTANCE); do \
	  printf 'acceptance %s: ' $$t; bash ../shared/acceptance/$$t || fails=$$((fails+1)); \
	done; [ $$fails -eq 0 ]

# Benchmarks: every package with a `func Benchmark` runs on its own (one package at a time, so
# scenarios do not steal each other's CPU), with a -benchtime chosen per package so the whole run fits
# in ~15 minutes on a 2-core box. Fixed-work scenarios (a testbed, N allocations, N CNI calls, route
# scale) run once: 1x, which is also what any new package gets, e.g. BGP route scale in ./bgp/... and
# anything in ./testbed/.... The raw output goes to $(BENCH_OUT); internal/benchsummary prints the
# BENCH lines and the summary table. Exit status is non-zero only when a benchmark's correctness check
# failed (or a package did not build); speed is never judged here.
BENCH_OUT      ?= $(BIN)/bench.out
BENCH_MICRO    ?= 200ms
BENCH_KV       ?= 1000x
BENCH_CALC     ?= 30x
BENCH_DP       ?= 5x
BENCH_TIMEOUT  ?= 10m
bench: deps build
	@out=$(BENCH_OUT); : > $$out; status=0; \
	dirs=$$(grep -rl --include='*_test.go' -e '^func Benchmark' . | xargs -r -n1 dirname | sort -u); \
	for d in $$dirs; do \
	  case $$d in \
	    ./datastore/api|./datastore/selector) bt=$(BENCH_MICRO);; \
	    ./datastore/kv|./datastore) bt=$(BENCH_KV);; \
	    ./felix/calc) bt=$(BENCH_CALC);; \
	    ./felix/dataplane/*) bt=$(BENCH_DP);; \
	    *) bt=1x;; \
	  esac; \
	  echo "== $(GO) test -count=1 -run '^$$' -bench . -benchtime $$bt $$d" | tee -a $$out; \
	  { $(GO) test -count=1 -run '^$$' -bench . -benchtime $$bt -timeout $(BENCH_TIMEOUT) $$d 2>&1; echo $$? > $$out.rc; } | tee -a $$out; \
	  [ "$$(cat $$out.rc)" = 0 ] || status=1; \
	done; rm -f $$out.rc; echo; \
	$(GO) run ./internal/benchsummary < $$out || status=1; \
	echo "raw output: $$out"; exit $$status

demo: deps build
	$(BIN)/terrace-testbed demo

demo-down: build
	$(BIN)/terrace-testbed down

clean:
	rm -rf $(BIN)
