# One entry point for people and CI. `make test` is the README's test command.
.PHONY: all build fmt fmt-check lint test demo release loadtest chaos

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

release:
	cargo build --release --locked -p sendwerk -p sendwerk-loadtest

# One load run: 100,000 recipients through the real gRPC API, control and sender processes,
# to the built-in sink; the last line is a JSON summary.
loadtest: release
	./target/release/sendwerk-loadtest --recipients 100000

# Crash and fault tests, each on a 100,000-recipient mailing with two sender processes: kill -9
# a sender, SIGSTOP one past its lease and SIGCONT it, restart PostgreSQL, and a sink that
# answers 421/451/550, hangs or drops the connection after the final dot. Each run fails unless
# every recipient ends in exactly one final state, none is lost, and every duplicate delivery
# is matched by an outcome-unknown event.
CHAOS_SCENARIOS = kill-sender stop-sender restart-postgres sink-faults
chaos: release
	@for scenario in $(CHAOS_SCENARIOS); do \
		echo "== chaos: $$scenario"; \
		RUST_LOG=error ./target/release/sendwerk-loadtest --recipients 100000 --senders 2 --lease-secs 4 --chaos $$scenario || exit 1; \
	done
