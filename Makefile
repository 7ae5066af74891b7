# kurer: `make run` shows a case moving between two municipalities;
# `make test` runs the whole suite (vet + race), as CI does.
GO      ?= go
BIN     := bin/kurer
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/kurer/kurer/internal/cli.Version=$(VERSION)
FUZZTIME ?= 20s

.PHONY: all build run test test-short test-crash fuzz bench bench-envelope bench-gateway bench-pipeline docs fmt vet clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kurer

run: build
	$(BIN) demo

vet:
	$(GO) vet ./...

test: vet
	$(GO) test -race -timeout 9m ./...

test-short:
	$(GO) test -short ./...

# The full crash suite: real processes, SIGKILL at random moments.
test-crash: build
	KURER_CRASH_FULL=1 $(GO) test -count=1 -run 'TestCrash' -timeout 30m -v ./internal/crashtest/

# Every native fuzz target, each for FUZZTIME, found with go test -list (the
# agent local API targets FuzzLocalAPISend and FuzzLocalAPIRejected among
# them); a crasher is minimised for at most 1 s.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$pkg; \
	  done; \
	done

bench-envelope: build
	$(BIN) bench envelope --size 1MiB
	$(BIN) bench envelope --size 100MiB
	$(BIN) bench envelope --size 1GiB

bench-gateway: build
	$(BIN) bench gateway

# The pipeline runs the gateway part as well.
bench-pipeline: build
	$(BIN) bench pipeline

bench: bench-envelope bench-pipeline

# Regenerate the CLI reference in docs/cli/.
docs:
	$(GO) run ./internal/cli/gendocs docs/cli

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
