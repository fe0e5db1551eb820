# Entry points for a fresh machine. `make demo` runs the product, `make test` runs every test.
CARGO ?= cargo

.PHONY: setup demo test lint bench

setup:
	scripts/setup.sh

# Until the network-namespace demo lands, the demo is an `explain` walkthrough over the
# example policies of every user story in deploy/examples.
demo: setup
	$(CARGO) build --release -p chokepoint
	scripts/walkthrough.sh

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	$(CARGO) test --workspace

bench: setup
	$(CARGO) bench -p chokepoint --bench policy
