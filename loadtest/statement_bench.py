#!/usr/bin/env python3
"""Postgres CPU of the claim and the write-back, per recipient, without the rest of the system.

Creates its own database, `sendwerk_statement_bench`, on the Postgres server that
STATEMENT_BENCH_URL names (dropped first if it exists; the server must run on this machine,
since the backend's CPU time is read from /proc). It applies the migrations with
`sendwerk migrate`, queues 200,000 recipients of one sending mailing with every shard leased
to one sender, then runs claims of 1,024 rows and writes each batch back as sent, the
statements prepared with the parameter types the sender uses. It prints the backend's CPU
microseconds per row for each statement. The first five rounds are not counted (plans settle).
Work of other Postgres processes (WAL writer, autovacuum) is not counted either.

Variants are directories holding `claim.sql` and `wb.sql` (the shape of
`services/store/sql/claim_due_recipients.sql` and `finish_outcomes.sql`); without any, the
statements of this checkout are measured. Variants run alternated, and each prints its median:

    pip install 'psycopg[binary]'
    cargo build --release -p sendwerk
    STATEMENT_BENCH_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        python3 loadtest/statement_bench.py --runs 8 [VARIANT_DIR ...]

Each variant may hold a `setup.sql` run after the migrations (e.g. a schema change to compare).
To compare with an earlier commit, put its two statements in a directory:

    mkdir -p /tmp/old && git show REV:services/store/sql/claim_due_recipients.sql > /tmp/old/claim.sql
    git show REV:services/store/sql/finish_outcomes.sql > /tmp/old/wb.sql

and, if migrations changed the schema since, a `setup.sql` that undoes them. The statements
must take the parameters of this checkout's: before migration 9 (claim batches) the write-back
took the queue row's place instead of the lease token, version and claim time, so a commit
before it is measured with its own copy of this script and its own build (`--sendwerk`).
"""

import argparse
import datetime
import os
import pathlib
import statistics
import subprocess
import sys
import urllib.parse
import uuid

import psycopg
from psycopg.types.numeric import Int2, Int8

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATABASE = "sendwerk_statement_bench"
OWNER = uuid.UUID("00000000-0000-0000-0000-000000000001")
BATCH = 1024
ROWS = 200_000
SHARDS = [Int2(shard) for shard in range(256)]
WARMUP = 5

DATA = [
    "INSERT INTO mailings (id, tenant_id, name, from_email, subject_template, state) "
    "VALUES (1, 'bench', 'bench', 'a@b.example', 's', 'sending')",
    "INSERT INTO recipients (mailing_id, tenant_id, email, domain, shard, external_id, variables, state) "
    "SELECT 1, 'bench', 'user' || g || '@d' || (g % 50) || '.example', 'd' || (g % 50) || '.example', "
    "(hashtext('d' || (g % 50)) & 255)::smallint, g::text, "
    "jsonb_build_object('first_name', 'Name' || g, 'n', g), 'queued' FROM generate_series(1, {n}) g",
    # Queued as the ingest queues them: checked against the suppression list already, so the
    # claim need not check again (`recheck`, since migration 10; older schemas lack it).
    "DO $$ BEGIN "
    "IF EXISTS (SELECT 1 FROM information_schema.columns "
    "           WHERE table_name = 'queue' AND column_name = 'recheck') THEN "
    "  INSERT INTO queue (recipient_id, mailing_id, shard, domain, recheck) "
    "  SELECT id, mailing_id, shard, domain, false FROM recipients; "
    "ELSE "
    "  INSERT INTO queue (recipient_id, mailing_id, shard, domain) "
    "  SELECT id, mailing_id, shard, domain FROM recipients; "
    "END IF; END $$",
    "UPDATE shard_leases SET owner = '00000000-0000-0000-0000-000000000001', token = token + 1, "
    "expires_at = now() + interval '1 day'",
    "VACUUM ANALYZE queue",
    "VACUUM ANALYZE recipients",
    "CHECKPOINT",
]


def backend_cpu(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def url_for(base: str, database: str) -> str:
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def prepare_database(server_url: str, sendwerk: pathlib.Path, variant: pathlib.Path, rows: int) -> str:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    url = url_for(server_url, DATABASE)
    migrate = subprocess.run([str(sendwerk), "migrate"], env={**os.environ, "DATABASE_URL": url},
                             capture_output=True, text=True)
    if migrate.returncode != 0:
        sys.exit(f"sendwerk migrate failed:\n{migrate.stderr}")
    with psycopg.connect(url, autocommit=True) as conn:
        setup = variant / "setup.sql"
        if setup.exists():
            conn.execute(setup.read_text())
        for statement in DATA:
            conn.execute(statement.format(n=rows))
    return url


def run(url: str, variant: pathlib.Path, rounds: int) -> tuple[float, float]:
    claim = (variant / "claim.sql").read_text()
    write_back = (variant / "wb.sql").read_text()
    with psycopg.connect(url, autocommit=True, cursor_factory=psycopg.RawCursor) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        comm = pathlib.Path(f"/proc/{pid}")
        if not comm.exists() or (comm / "comm").read_text().strip() != "postgres":
            sys.exit(f"backend {pid} is not a postgres process on this machine")
        after = (datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc), Int8(0))
        claim_cpu = write_cpu = 0.0
        counted = 0
        for round_ in range(rounds):
            start = backend_cpu(pid)
            with conn.transaction():
                conn.execute("SET LOCAL enable_bitmapscan = off")
                rows = conn.execute(claim, (Int8(1), SHARDS, Int8(BATCH), OWNER, [], *after), prepare=True).fetchall()
            claimed = backend_cpu(pid)
            if not rows:
                break
            # As the sender does: resume after the last row in due order.
            due, last = max((row[12], row[0]) for row in rows)
            after = (due, Int8(last))
            ids = [Int8(row[0]) for row in rows]
            n = len(rows)
            args = (ids, ["sent"] * n, [250] * n, ["2.0.0"] * n, [f"250 2.0.0 Ok: queued as {i:X}" for i in ids],
                    [None] * n, [f"<{i}@bench.example>" for i in ids], ["sent"] * n, OWNER, [False] * n, [Int8(1)] * n,
                    [Int8(row[8]) for row in rows], [row[11] for row in rows], [row[13] for row in rows])
            start_write = backend_cpu(pid)
            written = conn.execute(write_back, args, prepare=True).fetchone()[0]
            end = backend_cpu(pid)
            if len(written) != n:
                sys.exit(f"{variant}: {n} claimed, {len(written)} written")
            if round_ >= WARMUP:
                claim_cpu += claimed - start
                write_cpu += end - start_write
                counted += n
    return claim_cpu * 1e6 / counted, write_cpu * 1e6 / counted


def checkout_variant() -> pathlib.Path:
    variant = pathlib.Path("/tmp/sendwerk-statement-bench-checkout")
    variant.mkdir(exist_ok=True)
    sql = ROOT / "services" / "store" / "sql"
    (variant / "claim.sql").write_text((sql / "claim_due_recipients.sql").read_text())
    (variant / "wb.sql").write_text((sql / "finish_outcomes.sql").read_text())
    return variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", type=pathlib.Path)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=150, help="claims of 1,024 per run")
    parser.add_argument("--sendwerk", type=pathlib.Path, default=ROOT / "target" / "release" / "sendwerk")
    args = parser.parse_args()
    server_url = os.environ.get("STATEMENT_BENCH_URL") or sys.exit("set STATEMENT_BENCH_URL to a local Postgres server")
    host = urllib.parse.urlsplit(server_url).hostname or "localhost"
    if host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("/"):
        sys.exit(f"{host}: the server must run on this machine (its backends' CPU is read from /proc)")
    variants = args.variants or [checkout_variant()]
    results: dict[pathlib.Path, list[tuple[float, float]]] = {variant: [] for variant in variants}
    rows = max(ROWS, (args.rounds + 1) * BATCH)
    for run_index in range(args.runs):
        for variant in variants if run_index % 2 == 0 else variants[::-1]:
            url = prepare_database(server_url, args.sendwerk, variant, rows)
            claim_us, write_us = run(url, variant, args.rounds)
            results[variant].append((claim_us, write_us))
            print(f"{variant}: claim {claim_us:.2f} write-back {write_us:.2f} total {claim_us + write_us:.2f} µs/row",
                  flush=True)
    for variant, runs in results.items():
        claim = statistics.median(c for c, _ in runs)
        write = statistics.median(w for _, w in runs)
        total = statistics.median(c + w for c, w in runs)
        print(f"median {variant}: claim {claim:.2f} write-back {write:.2f} total {total:.2f} µs/row ({len(runs)} runs)")


if __name__ == "__main__":
    main()
