"""examples/stream_receiver.py, the receiving end a README reader copies, fed by a real relay."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from support.entries import put
from support.pgserver import free_port
from support.sinks import Certificates
from whodid import Auditor
from whodid.stream import sign_batch

SECRET = "receiver-example-secret-0123456789"
ROOT = Path(__file__).resolve().parent.parent


def load_example():
    spec = importlib.util.spec_from_file_location(
        "stream_receiver", ROOT / "examples" / "stream_receiver.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def served(tmp_path):
    """The example app under uvicorn with TLS, as the module docstring runs it."""
    certs = Certificates(tmp_path)
    app = load_example().create_app([SECRET])
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ssl_certfile=str(certs.cert),
        ssl_keyfile=str(certs.key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield app, f"https://127.0.0.1:{port}/whodid", certs
    server.should_exit = True
    thread.join(10)


def test_a_relay_feeds_the_example_receiver_and_repeats_are_stored_once(served, sqlite_url):
    app, url, certs = served
    auditor = Auditor(sqlite_url)
    auditor.create_all()
    for n in range(5):
        put(auditor, entity=("customer", f"cus_{n}"))
    auditor.stream(url, secrets=[SECRET], ca=str(certs.ca), batch_size=2).drain()
    # The same entries again, as after a crash: stored once.
    auditor.stream(url, secrets=[SECRET], ca=str(certs.ca), name="replayed").drain()
    assert [e["entity_id"] for e in app.state.entries.values()] == [f"cus_{n}" for n in range(5)]


def test_the_example_receiver_refuses_unsigned_and_forged_batches():
    from starlette.testclient import TestClient

    client = TestClient(load_example().create_app([SECRET]))
    body = b'{"id":"log_forged","action":"payment.refund"}\n'
    assert client.post("/whodid", content=body).status_code == 401
    forged = sign_batch(body, ["an-attacker-guessed-secret-000"])
    assert (
        client.post("/whodid", content=body, headers={"Whodid-Signature": forged}).status_code
        == 401
    )
    signed = sign_batch(body, [SECRET])
    answer = client.post("/whodid", content=body, headers={"Whodid-Signature": signed})
    assert answer.status_code == 200 and answer.json() == {"received": 1}
