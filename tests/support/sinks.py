"""Real receivers for log streams: an HTTPS server (certificates from trustme) and rsyslog.

``HTTPSSink`` is a threaded ``http.server`` behind TLS that checks each batch's
signature the way a receiver should and keeps what it took; it can be told to
fail, to hang up, or to be slow. ``RsyslogServer`` runs Debian's rsyslogd in
the foreground, receiving RFC 5425 frames over plain TCP and over TLS, and
writing each message as it arrived to a file.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

from support.pgserver import free_port
from whodid.errors import InvalidSignature
from whodid.stream import SIGNATURE_HEADER, verify_signature


class Certificates:
    """A CA made for the test and a server certificate for 127.0.0.1 and localhost."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.ca = directory / "ca.pem"
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        ca.cert_pem.write_to_path(str(self.ca))
        server.cert_chain_pems[0].write_to_path(str(self.cert))
        server.private_key_pem.write_to_path(str(self.key))
        self.trustme_ca = ca


class HTTPSSink:
    """An HTTPS receiver of signed NDJSON batches.

    Attributes:
        batches: every accepted batch's entries (decoded), in arrival order.
        statuses: the status answered to each request, in order.
        plan: decides each request's answer from its number (0-based): an int
            status, or None to take the batch. Default: take every batch.
    """

    def __init__(self, certs: Certificates, secrets: list[str], port: int | None = None) -> None:
        self.certs, self.secrets = certs, secrets
        self.batches: list[list[dict[str, Any]]] = []
        self.statuses: list[int] = []
        self.plan: Callable[[int], int | None] = lambda n: None
        self.delay = 0.0
        self.answer = b"ok"  # the body of every answer
        self.on_request: Callable[[int], None] = lambda n: None
        self.lock = threading.Lock()
        self.port = port or free_port()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in one write, as real servers send them: two small
            # writes would wait out the client's delayed ACK (Nagle), 40 ms a request.
            wbufsize = 1 << 16

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with sink.lock:
                    number = len(sink.statuses)
                    sink.statuses.append(0)
                sink.on_request(number)
                status = sink.plan(number)
                if status is None:
                    try:
                        verify_signature(body, self.headers.get(SIGNATURE_HEADER), sink.secrets)
                        assert self.headers["Content-Type"] == "application/x-ndjson"
                        entries = [json.loads(line) for line in body.decode().splitlines()]
                        with sink.lock:
                            sink.batches.append(entries)
                        status = 200
                    except InvalidSignature:
                        status = 401
                if sink.delay:
                    time.sleep(sink.delay)
                sink.statuses[number] = status
                self.send_response(status)
                self.send_header("Content-Length", str(len(sink.answer)))
                self.end_headers()
                self.wfile.write(sink.answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(certs.cert), str(certs.key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/ingest"

    @property
    def entries(self) -> list[dict[str, Any]]:
        with self.lock:
            return [entry for batch in self.batches for entry in batch]

    def start(self) -> HTTPSSink:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_RSYSLOG_CONF = """\
global(workDirectory="{dir}" maxMessageSize="256k"
       DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{tls_port}" address="127.0.0.1")
module(load="imptcp")
input(type="imptcp" port="{tcp_port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\\n")
action(type="omfile" file="{out}" template="raw" flushOnTXEnd="on" asyncWriting="off")
"""


class RsyslogServer:
    """Debian's rsyslogd on 127.0.0.1: RFC 5425 over TLS on ``tls_port``, plain TCP on
    ``tcp_port``, every message's raw text written as one line of ``out``."""

    def __init__(self, certs: Certificates) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="whodid-rsyslog-"))
        self.tls_port, self.tcp_port = free_port(), free_port()
        self.out = self.dir / "received.log"
        self.conf = self.dir / "rsyslog.conf"
        self.conf.write_text(
            _RSYSLOG_CONF.format(
                dir=self.dir,
                ca=certs.ca,
                cert=certs.cert,
                key=certs.key,
                tls_port=self.tls_port,
                tcp_port=self.tcp_port,
                out=self.out,
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RsyslogServer:
        binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        self.process = subprocess.Popen(
            [binary, "-n", "-f", str(self.conf), "-i", str(self.dir / "pid")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr", "wb"),  # noqa: SIM115 - the process owns it
        )
        for port in (self.tls_port, self.tcp_port):
            _wait_for_port(port, self.process, self.dir / "stderr")
        return self

    def lines(self) -> list[str]:
        if not self.out.exists():
            return []
        return self.out.read_text(encoding="utf-8").splitlines()

    def wait_for(self, count: int, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.lines()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"rsyslog wrote {len(self.lines())} of {count} messages")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], stderr: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rsyslogd exited: {stderr.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"rsyslogd did not listen on {port} within 20 s: {stderr.read_text()}")
