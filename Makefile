# Glow: build, test, demo, bench, fuzz. `make help` lists the targets.
#
# `make test` includes the namespace tests in e2e/ when run as root (CI runs
# it as root); without root they skip, saying so loudly.

GO        ?= go
BIN       ?= bin/glow
# glow-userspace is glow with the userspace network stack (gVisor, tag
# glow_netstack): `glow up --userspace` hands its daemon to it, so that glow
# itself, the kernel-TUN daemon, does not carry gVisor (cmd/glow/userspace.go).
USERSPACE_BIN = $(dir $(BIN))glow-userspace
TIMEOUT   ?= 15m
# The namespace tests include two of about seven minutes (e2e/renew_test.go,
# in parallel with each other): E2E_SLOW runs them in a process of their own
# beside the others.
E2E_SLOW   = ^TestRenewal
E2E_TIMEOUT ?= 20m
FUZZTIME  ?= 10s
# Build tags for every go command make runs (build, test, the binaries the
# namespace tests and make bench build): ts_omit_debugeventbus leaves
# tailscale's event-bus debugger (an HTML UI with net/http/pprof, pulled in
# by net/portmapper) out of glow, 0.55 MB of binary and ~1 MiB of the
# daemon's resident memory that glow never serves.
GOTAGS    ?= ts_omit_debugeventbus
export GOFLAGS := $(strip $(GOFLAGS) -tags=$(GOTAGS))
# make install: DESTDIR stages the files elsewhere (packaging, tests).
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
UNITDIR   ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
GOFILES    = $(shell find . -name '*.go' -not -path './.git/*' -not -path './bin/*')

.PHONY: all help build test fmt-check vet demo bench bench-go fuzz clean install uninstall

all: build

help:
	@echo "make build    build $(BIN) and $(USERSPACE_BIN) (glow with the userspace stack, for --userspace)"
	@echo "make test     gofmt check, go vet, go test ./... (e2e namespace tests need root)"
	@echo "make demo     the whole story in namespaces: home, VPS, cafe (hard NAT), a friend; ssh, share, the map (root; KEEP=1 keeps it up)"
	@echo "make bench    glow vs wireguard-go vs raw veth, relays, NAT timings, in namespaces -> BENCHMARKS.md (root)"
	@echo "make bench-go the in-process Go benchmarks"
	@echo "make fuzz     each fuzz target for FUZZTIME ($(FUZZTIME))"
	@echo "make clean    remove bin/ and e2e/out/"
	@echo "make install  glow and glow-userspace in BINDIR, glow.service in UNITDIR, SYSCONFDIR/default/glow (PREFIX=$(PREFIX), DESTDIR)"

build:
	$(GO) build -o $(BIN) ./cmd/glow
	$(GO) build -tags=$(GOTAGS),glow_netstack -o $(USERSPACE_BIN) ./cmd/glow

fmt-check:
	@unformatted="$$(gofmt -l $(GOFILES))"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files are not formatted (run gofmt -w):"; \
		echo "$$unformatted"; \
		exit 1; \
	fi
	@echo "gofmt: ok"

vet:
	$(GO) vet ./...

test: fmt-check vet
	@if [ "$$(id -u)" != 0 ]; then \
		echo "!!!!!!!! SKIPPING namespace tests (e2e/): not root; run 'sudo make test' !!!!!!!!"; \
	fi
	$(GO) test -timeout $(TIMEOUT) $$($(GO) list ./... | grep -v '/e2e')
	@# The namespace tests last and on their own: they time real networks, and
	@# sharing two cores with the in-process suites makes them flaky. The two
	@# renewal tests (six idle minutes of two-minute certificates, pinging
	@# every 200 ms) run beside them in their own process: most of their time
	@# is waiting, and in the same process they would start only after the
	@# others (t.Parallel) and add their whole length.
	@set -e; log=$$(mktemp); \
	$(GO) test -timeout $(E2E_TIMEOUT) -run '$(E2E_SLOW)' ./e2e/ >$$log 2>&1 & slow=$$!; \
	rc=0; $(GO) test -p 1 -timeout $(E2E_TIMEOUT) -skip '$(E2E_SLOW)' ./e2e/... || rc=$$?; \
	wait $$slow || rc=$$?; \
	echo "--- the renewal tests (run beside the others):"; cat $$log; rm -f $$log; \
	exit $$rc

demo:
	@if [ "$$(id -u)" != 0 ]; then echo "make demo needs root (network namespaces)"; exit 1; fi
	./scripts/demo.sh

bench:
	@if [ "$$(id -u)" != 0 ]; then echo "make bench needs root (network namespaces)"; exit 1; fi
	$(GO) run ./bench $(BENCHFLAGS)

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

clean:
	rm -rf bin e2e/out

# The binary, the systemd unit (ExecStart pointed at BINDIR) and, unless it
# exists already, the default file holding GLOW_ARGS. Then:
#   systemctl daemon-reload && systemctl enable --now glow
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/default
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/glow
	install -m 0755 $(USERSPACE_BIN) $(DESTDIR)$(BINDIR)/glow-userspace
	sed -e 's|/usr/local/bin/glow|$(BINDIR)/glow|g' -e 's|/etc/default/glow|$(SYSCONFDIR)/default/glow|g' \
		dist/glow.service > $(DESTDIR)$(UNITDIR)/glow.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/glow.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/default/glow ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/default/glow"; \
	else \
		install -m 0644 dist/glow.default $(DESTDIR)$(SYSCONFDIR)/default/glow; \
	fi

# The binary and the unit; the default file and the state stay.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/glow $(DESTDIR)$(BINDIR)/glow-userspace $(DESTDIR)$(UNITDIR)/glow.service
