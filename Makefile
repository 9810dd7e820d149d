# connector — the two commands a new user needs are `make demo` and `make test`.
GO      ?= go
BIN     := bin/connector
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
export GOFLAGS := -mod=mod

.PHONY: all build demo test test-unit deps bench lint clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/connector

# The main job on embedded defaults: sample snapshots → state → JSON Lines.
demo: build
	./scripts/demo.sh

# Everything: installs the Debian packages of the test servers if missing,
# then runs unit and integration tests (each test starts its own servers).
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 18m ./...

test-unit:
	$(GO) test -count=1 -short ./...

deps:
	./testenv/install-deps.sh
	$(GO) mod download

bench: deps build
	./scripts/bench.sh

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.6.1 ./...

clean:
	rm -rf bin demo-out
