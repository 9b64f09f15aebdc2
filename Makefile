# mailcluster: build, run and test targets. `make help` lists them.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO      ?= go
BIN     ?= bin/mailnode
DATA    ?= ./data
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

# The whole suite must stay well under 15 minutes on 2 cores.
TEST_TIMEOUT    ?= 12m
TEST_PARALLEL   ?= 2
# Every fuzz target runs this long in `make test`, and FUZZ_TIME in `make fuzz`.
# The smoke run counts executions instead of seconds: with a duration, Go
# 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" as the time runs out on a loaded machine (golang/go#75804,
# fixed in Go 1.27), which would make CI fail with no crasher found.
FUZZ_SMOKE_TIME ?= 1000x
FUZZ_TIME       ?= 2m
# Compose v2 plugin, or the standalone v1 tool.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: help build run test vet fmt-check fuzz-smoke fuzz cluster cluster-down cluster-status \
	compose-up compose-down compose-test chaos bench mailbench screenshots clean

help:
	@echo "make build       build $(BIN) (static, version $(VERSION))"
	@echo "make run         build and serve a development node on 127.0.0.1, data in $(DATA)"
	@echo "make test        go vet, gofmt check, go test ./..., then every fuzz target for $(FUZZ_SMOKE_TIME)"
	@echo "make vet         go vet ./... (and the compose test, behind its build tag)"
	@echo "make fmt-check   fail if a Go file is not gofmt-formatted"
	@echo "make fuzz        every fuzz target for FUZZ_TIME=$(FUZZ_TIME)"
	@echo "make cluster     build and start a three-node cluster as local processes (n1 eu, n2 us,"
	@echo "                 n3 ap; node N on N2525, N2587, ... N2700), data and logs in $(CLUSTER_DIR)/nN"
	@echo "make cluster-down  stop the local cluster (SIGTERM, bounded wait; the data stays)"
	@echo "make cluster-status  which local nodes run, and the cluster as n1 sees it"
	@echo "make compose-up  build, then the same three nodes in containers ($(COMPOSE) up -d --build)"
	@echo "make compose-down  stop and remove the containers (the volumes stay: $(COMPOSE) down -v drops them)"
	@echo "make compose-test  the docker compose end-to-end test: failover under load (COMPOSE_TEST_TIMEOUT=$(COMPOSE_TEST_TIMEOUT))"
	@echo "make chaos       the cluster chaos test, CHAOS_ROUNDS=$(CHAOS_ROUNDS) rounds (up to an hour)"
	@echo "make bench       build bin/mailnode and bin/mailbench, run the standard benchmark suite,"
	@echo "                 write bench-results/ and docs/benchmarks.md (see docs/benchmarks.md)"
	@echo "make screenshots  drive the web admin page in headless Chromium and write docs/images/admin-*.png"
	@echo "make clean       remove bin/ (never the data directory)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./node/cmd/mailnode

run: build
	$(BIN) serve --data $(DATA) --log-format text

test: vet fmt-check
	$(GO) test -p $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) ./...
	@$(MAKE) --no-print-directory fuzz-smoke

vet:
	$(GO) vet ./...
	$(GO) vet -tags compose ./node/composetest/

fmt-check:
	@files=$$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 -r gofmt -l); \
	if [ -n "$$files" ]; then echo "not gofmt-formatted:"; echo "$$files"; exit 1; fi

# run_fuzz runs every Fuzz target of every package for $(1). Targets are
# found with `go test -list` in each package whose tests define one. With
# a duration, Go's fuzzing coordinator can fail a target with a bare
# "context deadline exceeded" when its deadline meets a worker still busy
# (go.dev/issue/75804): that, with no failing input written, is no
# finding. A count (1000x, as `make test` runs) has no deadline.
define run_fuzz
	@count=0; \
	for pkg in $$($(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}:{{.Dir}}{{end}}' ./...); do \
		dir=$${pkg#*:}; pkg=$${pkg%%:*}; \
		grep -qs '^func Fuzz' "$$dir"/*_test.go || continue; \
		for target in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$target for $(1)"; \
			if ! $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(1) "$$pkg" > /tmp/mailcluster-fuzz.$$$$.log 2>&1; then \
				if grep -q '^    context deadline exceeded$$' /tmp/mailcluster-fuzz.$$$$.log \
					&& ! grep -q 'Failing input written' /tmp/mailcluster-fuzz.$$$$.log; then \
					echo "  stopped at its deadline with nothing found (Go's coordinator, go.dev/issue/75804)"; \
				else \
					cat /tmp/mailcluster-fuzz.$$$$.log; rm -f /tmp/mailcluster-fuzz.$$$$.log; exit 1; \
				fi; \
			else \
				tail -n 1 /tmp/mailcluster-fuzz.$$$$.log; \
			fi; \
			count=$$((count + 1)); \
		done; \
	done; \
	rm -f /tmp/mailcluster-fuzz.$$$$.log; \
	echo "fuzz: $$count target(s) passed"
endef

fuzz-smoke:
	$(call run_fuzz,$(FUZZ_SMOKE_TIME))

fuzz:
	$(call run_fuzz,$(FUZZ_TIME))

# A local three-node cluster, the layout of docker-compose.yml as background
# processes on 127.0.0.1 (scripts/cluster.sh): `make cluster` returns once
# the cluster serves, `make cluster-down` stops it. Run it or compose-up,
# not both: they publish the same ports.
CLUSTER_DIR ?= ./data/cluster

cluster: build
	BIN=$(BIN) CLUSTER_DIR=$(CLUSTER_DIR) scripts/cluster.sh up

cluster-down:
	BIN=$(BIN) CLUSTER_DIR=$(CLUSTER_DIR) scripts/cluster.sh down

cluster-status:
	BIN=$(BIN) CLUSTER_DIR=$(CLUSTER_DIR) scripts/cluster.sh status

# The same cluster in containers (docker-compose.yml). compose-up returns
# once n1 reports all three nodes up.
compose-up: build
	$(COMPOSE) up -d --build
	COMPOSE="$(COMPOSE)" scripts/compose-wait.sh

compose-down:
	$(COMPOSE) down

# The compose end-to-end test (node/composetest, build tag "compose"):
# builds the image from $(BIN), runs the three regions under a project
# name of its own on free ports, kills a shard leader under load, and
# removes everything again. It skips only when no Docker engine exists,
# and never when CI is set. The project (MAILCLUSTER_COMPOSE_PROJECT, or
# a random name) is removed here too, in case the test was cut off.
COMPOSE_TEST_TIMEOUT ?= 15m

compose-test: build
	@project=$${MAILCLUSTER_COMPOSE_PROJECT:-mailclustertest$$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')}; \
	status=0; \
	MAILNODE_BIN=$(abspath $(BIN)) MAILCLUSTER_COMPOSE="$(COMPOSE)" MAILCLUSTER_COMPOSE_PROJECT=$$project \
		$(GO) test -tags compose -count=1 -v -timeout $(COMPOSE_TEST_TIMEOUT) ./node/composetest/ || status=$$?; \
	if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		$(COMPOSE) -p $$project down -v --remove-orphans -t 10 >/dev/null 2>&1 || true; \
		docker image rm -f mailcluster/mailnode:$$project >/dev/null 2>&1 || true; \
	fi; \
	exit $$status

# The cluster chaos test (cluster/), long: rounds of faults under load.
CHAOS_ROUNDS ?= 300

chaos:
	MAILCLUSTER_CHAOS_ROUNDS=$(or $(CHAOS_ROUNDS),300) $(GO) test -v -run 'TestChaos' -count=1 -timeout 60m ./cluster/

# The benchmark harness (bench/). `make bench` runs the standard suite
# (about ten minutes on two cores) and refreshes docs/benchmarks.md and its
# charts; `bin/mailbench run --quick` is the two-minute smoke run CI does.
BENCH_FLAGS ?=

mailbench:
	$(GO) build -trimpath -o bin/mailbench ./bench/cmd/mailbench

bench: build mailbench
	bin/mailbench run --mailnode $(BIN) --docs docs $(BENCH_FLAGS)

# Screenshots of the web admin page for the README, taken by the browser
# test in headless Chromium (Debian package chromium).
screenshots:
	mkdir -p docs/images
	MAILCLUSTER_REQUIRE_CHROMIUM=1 MAILCLUSTER_SCREENSHOTS=$(CURDIR)/docs/images $(GO) test -count=1 -run 'TestAdminWebInBrowser' ./node/

clean:
	rm -rf bin
