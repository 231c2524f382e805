"""Log streams to a real rsyslog (Debian's rsyslogd, rsyslog-gnutls for TLS), and the
RFC 5424 message and RFC 5425 frame each entry becomes."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from support.entries import exported, put
from support.sinks import Certificates, RsyslogServer
from whodid.stream import syslog

# HEADER of RFC 5424 section 6: PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP
# PROCID SP MSGID, then STRUCTURED-DATA and MSG.
RFC5424 = re.compile(
    r"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z) ([\x21-\x7e]{1,255}) "
    r"([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) ([\x21-\x7e]{1,32}) "
    r"(\[whodid@32473 (?:[^\]\\]|\\.)*\]) (.*)$"
)


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("rsyslogd") is None and not os.path.exists("/usr/sbin/rsyslogd"):
        message = "rsyslogd not found: apt-get install -y rsyslog rsyslog-gnutls"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    certs = Certificates(tmp_path_factory.mktemp("syslog-certs"))
    server = RsyslogServer(certs).start()
    server.certs = certs
    yield server
    server.stop()


@pytest.fixture
def auditor(db_auditor):
    return db_auditor


@pytest.mark.parametrize("scheme", ["syslog+tcp", "syslog+tls"])
def test_rsyslog_receives_every_entry_as_an_rfc5424_message(auditor, rsyslog, scheme):
    before = len(rsyslog.lines())
    for n in range(25):
        put(
            auditor,
            tenant=f'org_"{n % 3}"]',
            entity=("customer", f"cus_{n}"),
            metadata={"note": "line one\nline two", "n": n},
        )
    port = rsyslog.tls_port if scheme == "syslog+tls" else rsyslog.tcp_port
    ca = str(rsyslog.certs.ca) if scheme == "syslog+tls" else None
    relay = auditor.stream(f"{scheme}://127.0.0.1:{port}", ca=ca, batch_size=10)
    relay.drain()
    relay.destination.close()
    received = rsyslog.wait_for(before + 25)[before:]
    entries = exported(auditor)
    assert len(received) == 25
    for line, entry in zip(received, entries, strict=True):
        match = RFC5424.match(line)
        assert match, line
        pri, timestamp, _host, app, _procid, msgid, sd, msg = match.groups()
        assert pri == "110"  # facility 13 (log audit), severity 6
        assert app == "whodid" and msgid == entry["action"]
        assert timestamp == entry["occurred_at"]
        assert f'id="{entry["id"]}"' in sd and f'seq="{entry["seq"]}"' in sd
        tenant = entry["tenant_id"].replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
        assert f'tenant="{tenant}"' in sd
        assert json.loads(msg) == entry


def test_a_syslog_server_restarting_loses_nothing(auditor, tmp_path):
    """rsyslog stopped, entries written, rsyslog back: the relay reconnects and sends all."""
    certs = Certificates(tmp_path)
    server = RsyslogServer(certs).start()
    try:
        attempts: list[float] = []

        def sleep(seconds: float) -> None:
            attempts.append(seconds)
            if len(attempts) == 2:
                server.start()

        put(auditor, entity=("customer", "first"))
        relay = auditor.stream(
            f"syslog+tcp://127.0.0.1:{server.tcp_port}", backoff=0.01, sleep=sleep
        )
        relay.drain()
        server.wait_for(1)
        server.process.terminate()
        server.process.wait(10)
        put(auditor, entity=("customer", "second"))
        relay.drain()
        assert len(attempts) == 2  # refused twice while rsyslog was down
        lines = server.wait_for(2)
        assert [json.loads(RFC5424.match(x).group(8))["entity_id"] for x in lines] == [
            "first",
            "second",
        ]
    finally:
        server.stop()


def test_frames_count_octets_not_characters():
    text = 'héllo "wörld"'.encode()
    assert syslog.frame(text) == b"%d " % len(text) + text
    assert syslog.frame(text).startswith(b"15 ")


def test_header_fields_are_printable_ascii_within_their_limits():
    assert syslog.header_name("payment refund\n✓", 32) == "payment_refund__"
    assert syslog.header_name("a" * 40, 32) == "a" * 32
    assert syslog.header_name("", 32) == "-"


def test_no_value_can_break_out_of_the_structured_data():
    from whodid.entry.fields import COLUMNS

    row = dict.fromkeys(COLUMNS)
    row.update(
        id='log_x" tenant="org_victim',
        seq=1,
        tenant_id="a]b\\",
        action="a.b",
        occurred_at=__import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").UTC),
    )
    text = syslog.message(tuple(row[c] for c in COLUMNS), "{}", hostname="h").decode()
    sd = RFC5424.match(text).group(7)
    assert sd == '[whodid@32473 id="log_x\\" tenant=\\"org_victim" seq="1" tenant="a\\]b\\\\"]'
