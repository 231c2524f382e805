"""Log streams through `whodid stream`: the CLI, and the relay killed with SIGKILL
mid-batch and restarted (issue 22).

At least once: what the destination had when the relay died may arrive again,
byte-identical by ``id``; nothing is lost, and apart from that repeat nothing
arrives out of order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from support.entries import exported, put
from support.sinks import Certificates, HTTPSSink
from whodid.cli import main

SECRET = "crash-test-secret-0123456789abcdef"


@pytest.fixture
def auditor(db_auditor):
    return db_auditor


def stream_command(db_url: str, to: str, *extra: str) -> list[str]:
    """`whodid stream` in a process of its own."""
    return [sys.executable, "-m", "whodid.cli", "stream", "--db", db_url, "--to", to, *extra]


def to_sink(db_url: str, sink: HTTPSSink, certs: Certificates, *extra: str) -> list[str]:
    return stream_command(
        db_url,
        sink.url,
        "--ca",
        str(certs.ca),
        "--batch-size",
        "20",
        "--interval",
        "0.05",
        *extra,
    )


def env() -> dict[str, str]:
    return {**os.environ, "WHODID_STREAM_SECRET": SECRET}


def test_sigkill_mid_batch_then_restart_loses_nothing_and_repeats_only_whole_entries(
    auditor, certs, db_url
):
    for n in range(200):
        put(auditor, entity=("customer", f"cus_{n:03}"))
    sink = HTTPSSink(certs, [SECRET]).start()
    sink.delay = 0.15  # each batch is taken, then answered a little later
    third = threading.Event()
    sink.on_request = lambda n: third.set() if n == 3 else None
    try:
        relay = subprocess.Popen(to_sink(db_url, sink, certs), env=env(), stderr=subprocess.PIPE)
        assert third.wait(60), relay.stderr.read().decode() if relay.poll() else "no 4th batch"
        time.sleep(0.05)  # the 4th batch is in the sink, its answer not yet sent
        relay.send_signal(signal.SIGKILL)
        relay.wait(10)
        taken_before = len(sink.batches)
        assert 1 <= taken_before < 10
        sink.delay = 0
        restarted = subprocess.run(
            to_sink(db_url, sink, certs, "--once"),
            env=env(),
            capture_output=True,
            timeout=120,
        )
        assert restarted.returncode == 0, restarted.stderr.decode()
    finally:
        sink.stop()
    received = sink.entries
    expected = exported(auditor)
    by_id = {e["id"]: e for e in expected}
    assert {e["id"] for e in received} == set(by_id)  # nothing lost
    for entry in received:
        assert entry == by_id[entry["id"]]  # a repeat is the same entry, byte for byte
    repeats = len(received) - len(by_id)
    assert 1 <= repeats <= 20  # the batch in flight when it died, and nothing else
    # In order, apart from the repeat: the seqs rise, fall back once, and rise again.
    seqs = [e["seq"] for e in received]
    falls = [i for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1]]
    assert len(falls) == 1
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == sorted(first_seen)


def test_the_cli_ships_to_a_file_with_filters(auditor, db_url, tmp_path):
    put(auditor, tenant="org_1", action="payment.refund")
    put(auditor, tenant="org_2", action="payment.refund")
    put(auditor, tenant="org_1", action="customer.create")
    out = tmp_path / "out.ndjson"
    result = CliRunner().invoke(
        main,
        [
            "stream",
            "--db",
            db_url,
            "--to",
            str(out),
            "--tenant",
            "org_1",
            "--action-prefix",
            "payment.",
            "--once",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "read 3 entries, delivered 1" in result.output
    shipped = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["tenant_id"], e["action"]) for e in shipped] == [("org_1", "payment.refund")]


def test_the_cli_takes_two_secrets_from_the_environment(auditor, db_url, certs):
    put(auditor)
    sink = HTTPSSink(certs, ["the-old-secret-still-known"]).start()
    try:
        result = CliRunner().invoke(
            main,
            ["stream", "--db", db_url, "--to", sink.url, "--ca", str(certs.ca), "--once"],
            env={"WHODID_STREAM_SECRET": f"{SECRET} the-old-secret-still-known"},
        )
    finally:
        sink.stop()
    assert result.exit_code == 0, result.output
    assert sink.statuses == [200] and len(sink.entries) == 1


def test_the_cli_refuses_an_https_stream_without_a_secret(auditor, db_url):
    result = CliRunner().invoke(
        main, ["stream", "--db", db_url, "--to", "https://siem.example/in", "--once"], env={}
    )
    assert result.exit_code == 1
    assert "needs a signing secret" in result.output


def test_the_cli_stops_cleanly_on_sigterm(auditor, db_url, tmp_path):
    out = tmp_path / "out.ndjson"
    relay = subprocess.Popen(
        stream_command(db_url, str(out), "--interval", "0.05"),
        stderr=subprocess.PIPE,
    )
    try:
        put(auditor, entity=("customer", "live"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (out.exists() and out.read_text()):
            time.sleep(0.05)
        assert json.loads(out.read_text())["entity_id"] == "live"
    finally:
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(20) == 0, relay.stderr.read().decode()


def test_the_cli_refuses_at_once_a_stream_another_relay_is_shipping(auditor, db_url, tmp_path):
    with auditor.stream(str(tmp_path / "a.ndjson"), name="siem") as running:
        running.drain()
        result = CliRunner().invoke(
            main, ["stream", "--db", db_url, "--to", str(tmp_path / "b"), "--name", "siem"]
        )
    assert result.exit_code == 1
    assert "another relay is shipping stream 'siem'" in result.output
