# One entry point for people and CI. `make test` is the README's test command.
.PHONY: all build fmt fmt-check lint test demo bench loadtest clean-pg

all: fmt-check lint test

build:
	cargo build --workspace --all-targets --locked

fmt:
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

lint:
	cargo clippy --workspace --all-targets --locked -- -D warnings

# The whole test suite: unit tests, the system tests (embedded PostgreSQL, real SMTP and gRPC
# over loopback), the independent DKIM verifier and the Python gRPC client (installed into
# target/ on first use).
test:
	cargo test --workspace --locked

demo:
	cargo run --release --locked -p sendwerk -- demo

loadtest:
	cargo run --release --locked -p sendwerk-loadtest -- --recipients 100000
