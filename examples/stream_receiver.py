"""The receiving end of a whodid log stream: a Starlette app that takes signed batches.

It checks each batch's ``Whodid-Signature`` (the timestamp too, so a captured
batch replayed later is refused), then stores every entry once by its ``id``:
after a relay crash a batch can arrive twice, always with the same entries.
Run it, and point a relay at it::

    WHODID_STREAM_SECRET=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    export WHODID_STREAM_SECRET
    uvicorn examples.stream_receiver:app --port 9000 \\
        --ssl-certfile cert.pem --ssl-keyfile key.pem          # HTTPS, as a SIEM would be
    whodid stream --db sqlite:///whodid-demo.db --to https://127.0.0.1:9000/whodid --ca ca.pem

While rotating, set ``WHODID_STREAM_SECRET="new old"`` on both sides.
"""

from __future__ import annotations

import json
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from whodid.errors import InvalidSignature
from whodid.stream import SIGNATURE_HEADER, verify_signature


def create_app(secrets: list[str]) -> Starlette:
    """The receiver; ``app.state.entries`` holds what arrived, by id, in arrival order."""
    entries: dict[str, dict[str, Any]] = {}

    async def take(request: Request) -> JSONResponse:
        body = await request.body()  # the exact bytes: the signature covers them
        try:
            verify_signature(body, request.headers.get(SIGNATURE_HEADER), secrets)
        except InvalidSignature as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        new = 0
        for line in body.decode("utf-8").splitlines():
            entry = json.loads(line)
            if entry["id"] not in entries:  # a repeat after a relay crash
                entries[entry["id"]] = entry
                new += 1
        return JSONResponse({"received": new})

    app = Starlette(routes=[Route("/whodid", take, methods=["POST"])])
    app.state.entries = entries
    return app


app = create_app(os.environ.get("WHODID_STREAM_SECRET", "").split())
