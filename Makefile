# Entry points for a fresh machine. `make demo` runs the product, `make test` runs every test.
CARGO ?= cargo

.PHONY: setup demo walkthrough test lint bench

setup:
	scripts/setup.sh

# The real gateway in a throwaway network-namespace lab (needs root). The demo is a binary of
# its own (the product `chokepoint` carries no lab code); it runs the `chokepoint` next to it.
demo: setup
	$(CARGO) build --release -p chokepoint -p chokepoint-demo
	target/release/chokepoint-demo

# The `explain` walkthrough over every user story in deploy/examples (no root needed).
walkthrough: setup
	$(CARGO) build --release -p chokepoint
	scripts/walkthrough.sh

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The whole suite runs with the default data path (`capture.l4: kernel`); the TPROXY suites
# then run again on the proxy path, so both stay tested.
PROXY_PATH_SUITES = data_path:: dns:: metadata:: services:: flows:: attacks::

test: lint
	$(CARGO) test --workspace
	CHOKEPOINT_TEST_L4=proxy $(CARGO) test -p chokepoint-tests --test it -- $(PROXY_PATH_SUITES)

bench: setup
	$(CARGO) bench -p chokepoint --bench policy
