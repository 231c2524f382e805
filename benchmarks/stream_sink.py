"""A local HTTPS receiver for the stream benchmark, run in its own process.

Checks every batch's signature as a real receiver would, notes when each entry
arrived, and answers ``GET /stats`` with ``{"entries": n, "arrived": {id: unix time}}``.
Usage: ``python stream_sink.py PORT CERT KEY SECRET``.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from whodid.stream import SIGNATURE_HEADER, verify_signature

PORT, CERT, KEY, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
arrived: dict[str, float] = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in one write, as real servers send them: two small
    # writes would wait out the client's delayed ACK (Nagle), 40 ms a request.
    wbufsize = 1 << 16

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        verify_signature(body, self.headers.get(SIGNATURE_HEADER), [SECRET])
        now = time.time()
        for line in body.splitlines():
            # The id is the line's first field ({"id": "log_...): no need to parse it all.
            arrived[line[8:38].decode()] = now
        self._answer(b"ok")

    def do_GET(self) -> None:
        self._answer(json.dumps({"entries": len(arrived), "arrived": arrived}).encode())

    def do_DELETE(self) -> None:
        arrived.clear()
        self._answer(b"ok")

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
