"""Exports that prove themselves: bundles, offline checks, one entry's proof, key rotation."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.testclient import TestClient

from support.entries import put
from whodid import ALL_TENANTS, Actor, Auditor
from whodid.cli import main
from whodid.integrity import bundle
from whodid.integrity.keys import generate_key_pair, key_id, load_public_key
from whodid.web import Viewer, audit_app

HOSTILE = ["Bob\r=cmd|' /C calc'!A0", "=1+1", "", "x\ny", "Zürich 😀"]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = generate_key_pair(str(tmp_path / "audit.pem"))
    return Path(private), Path(public)


@pytest.fixture
def sealed(db_url: str, keys: tuple[Path, Path]) -> Auditor:
    auditor = Auditor(db_url, signing_key=keys[0].read_bytes(), seal_grace=dt.timedelta(0))
    auditor.create_all()
    for i, label in enumerate(HOSTILE * 3):
        put(
            auditor,
            days_ago=5 - i / 10,
            tenant="org_1" if i % 2 else "org_2",
            actor=Actor.user(f"usr_{i}", label),
            entity=("customer", f"cus_{i}"),
            metadata={"note": label},
            user_agent=None if i % 3 else "",
        )
    auditor.seal()
    return auditor


def export_with_proof(auditor: Auditor, tmp_path: Path, fmt: str, **filters) -> tuple[bytes, dict]:
    out = tmp_path / f"export.{fmt}"
    proof = tmp_path / f"export.{fmt}.proof.json"
    with out.open("wb") as f, proof.open("w") as p:
        auditor.export(f, fmt, proof=p, **filters)
    return out.read_bytes(), json.loads(proof.read_text())


def ring(*paths: Path) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in (load_public_key(str(p)) for p in paths)}


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_an_export_with_its_bundle_checks_offline(sealed, keys, tmp_path, fmt):
    data, made = export_with_proof(sealed, tmp_path, fmt, tenant_id=ALL_TENANTS)
    assert made["format"] == bundle.FORMAT and made["unproven"] == []
    assert len(made["entries"]) == 15 and all(e["proof"] for e in made["entries"])
    assert bundle.check(made, data, ring(keys[1])) == []
    # The CLI says the same, from the files alone.
    export, proof = tmp_path / f"export.{fmt}", tmp_path / f"export.{fmt}.proof.json"
    result = CliRunner().invoke(
        main, ["check-proof", str(proof), str(export), "--public-key", str(keys[1])]
    )
    assert result.exit_code == 0, result.output
    assert "OK: 15 rows proven" in result.output


def _resealed(made: dict, data: bytes) -> dict:
    return {**made, "export": {**made["export"], "sha256": hashlib.sha256(data).hexdigest()}}


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def test_every_kind_of_tampering_names_the_row(sealed, keys, tmp_path):
    data, made = export_with_proof(sealed, tmp_path, "ndjson", tenant_id=ALL_TENANTS)
    lines = _lines(data)
    public = ring(keys[1])

    def problems(changed: list[bytes]) -> list[str]:
        edited = b"".join(changed)
        return bundle.check(_resealed(made, edited), edited, public)

    edited = lines.copy()
    edited[3] = edited[3].replace(b'"cus_3"', b'"cus_X"')
    assert any(p.startswith("row 4: differs") for p in problems(edited))
    assert any("row 15: in the bundle, missing" in p for p in problems(lines[:3] + lines[4:]))
    assert any("row 16: in the export" in p for p in problems([*lines, lines[0]]))
    swapped = [lines[1], lines[0], *lines[2:]]
    assert any(p.startswith("row 1:") for p in problems(swapped))
    # The file itself, untouched bundle: its hash no longer matches.
    assert any("SHA-256 differs" in p for p in bundle.check(made, b"".join(edited), public))
    # A forged bundle: another canonical form than the one signed.
    forged = json.loads(json.dumps(made))
    forged["entries"][2]["canonical"] = forged["entries"][2]["canonical"].replace("cus_2", "cus_Z")
    assert any(p.startswith("row 3:") for p in bundle.check(forged, data, public))


def test_entries_not_sealed_yet_are_listed_as_unproven(db_url, keys, tmp_path):
    plain = Auditor(db_url)  # no signing key: nothing is sealed
    plain.create_all()
    put(plain, tenant="org_1")
    data, made = export_with_proof(plain, tmp_path, "csv", tenant_id="org_1")
    assert [u["row"] for u in made["unproven"]] == [1]
    assert "no signing key" in made["unproven"][0]["why"]
    assert bundle.check(made, data, ring(keys[1])) == []  # the rows still equal their entries
    # With a key, the export seals first: every entry it holds is proven.
    keyed = Auditor(db_url, signing_key=keys[0].read_bytes())
    put(keyed, tenant="org_1")
    data, made = export_with_proof(keyed, tmp_path, "csv", tenant_id="org_1")
    assert made["unproven"] == [] and len(made["entries"]) == 4  # 2 puts, the first export
    assert bundle.check(made, data, ring(keys[1])) == []


def test_one_entrys_proof_in_python_and_over_http(sealed, keys):
    entry = sealed.list(tenant_id="org_1", limit=1).entries[0]
    proof = sealed.prove(entry.id, tenant_id="org_1")
    assert proof is not None and proof["entries"][0]["seq"] == entry.seq
    assert sealed.prove(entry.id, tenant_id="org_2") is None
    app = audit_app(sealed, authorize=lambda r: Viewer(r.headers["x-org"], "owner"))
    client = TestClient(app)
    got = client.get(f"/audit-logs/{entry.id}/proof", headers={"x-org": "org_1"})
    assert got.status_code == 200 and got.json()["entries"] == proof["entries"]
    other = client.get(f"/audit-logs/{entry.id}/proof", headers={"x-org": "org_2"})
    assert other.status_code == 404
    assert independent_check(got.json(), keys[1]) == 1


def test_keys_rotate(db_url, tmp_path):
    old_private, old_public = generate_key_pair(str(tmp_path / "old.pem"))
    new_private, new_public = generate_key_pair(str(tmp_path / "new.pem"))
    first = Auditor(db_url, signing_key=old_private, seal_grace=dt.timedelta(0))
    first.create_all()
    put(first, days_ago=2)
    first.seal()
    second = Auditor(db_url, signing_key=new_private, seal_grace=dt.timedelta(0))
    put(second, days_ago=1, entity=("customer", "cus_2"))
    second.seal()
    assert second.verify([old_public, new_public]).ok
    assert not second.verify(new_public).ok  # the first checkpoint is the old key's
    data, made = export_with_proof(second, tmp_path, "csv", tenant_id=ALL_TENANTS)
    both = ring(Path(old_public), Path(new_public))
    assert bundle.check(made, data, both) == []
    only_new = bundle.check(made, data, ring(Path(new_public)))
    assert any("unknown key" in p for p in only_new)
    assert {cp["key_id"] for cp in made["checkpoints"]} == set(both)


def independent_check(made: dict, public_pem: Path) -> int:
    """A bundle checked with hashlib and cryptography alone, as an outside auditor would."""
    public = serialization.load_pem_public_key(public_pem.read_bytes())
    roots = {}
    for cp in made["checkpoints"]:
        public.verify(base64.b64decode(cp["signature"]), cp["payload"].encode())  # type: ignore[union-attr]
        roots[cp["number"]] = json.loads(cp["payload"])["root"]
    proven = 0
    for entry in made["entries"]:
        digest = hashlib.sha256(entry["canonical"].encode()).digest()
        leaf = bytes.fromhex(entry["proof"]["leaf"])
        assert leaf[:8] == entry["seq"].to_bytes(8, "big") and leaf[16:] == digest
        node = hashlib.sha256(b"\x00" + leaf).digest()
        for step in entry["proof"]["path"]:
            sibling = bytes.fromhex(step["hash"])
            pair = sibling + node if step["side"] == "left" else node + sibling
            node = hashlib.sha256(b"\x01" + pair).digest()
        assert node.hex() == roots[entry["proof"]["checkpoint"]]
        proven += 1
    return proven


def test_a_bundle_checks_with_hashlib_and_cryptography_alone(sealed, keys, tmp_path):
    _, made = export_with_proof(sealed, tmp_path, "csv", tenant_id=ALL_TENANTS)
    assert independent_check(made, keys[1]) == 15


def test_the_cli_exports_with_a_proof_and_verifies_with_rotated_keys(db_url, tmp_path):
    old_private, old_public = generate_key_pair(str(tmp_path / "old.pem"))
    new_private, new_public = generate_key_pair(str(tmp_path / "new.pem"))
    first = Auditor(db_url, signing_key=old_private, seal_grace=dt.timedelta(0))
    first.create_all()
    put(first, days_ago=1)
    first.seal()
    put(first, entity=("customer", "cus_2"))
    out = tmp_path / "q.csv"
    run = CliRunner().invoke
    args = ["export", "--db", db_url, "--all-tenants", "-o", str(out), "--proof"]
    result = run(main, [*args, "--key", new_private])  # seals the rest with the new key
    assert result.exit_code == 0, result.output
    bundle_path = f"{out}.proof.json"
    both = ["--public-key", old_public, "--public-key", new_public]
    result = run(main, ["check-proof", bundle_path, str(out), *both])
    assert result.exit_code == 0 and "OK: 2 rows proven" in result.output, result.output
    result = run(main, ["check-proof", bundle_path, str(out), "--public-key", new_public])
    assert result.exit_code == 1 and "unknown key" in result.output
    assert run(main, ["verify", "--db", db_url, *both]).exit_code == 0
    assert run(main, ["verify", "--db", db_url, "--public-key", new_public]).exit_code == 1
    refused = run(main, ["export", "--db", db_url, "--all-tenants", "-o", "-", "--proof"])
    assert refused.exit_code == 2 and "--proof needs -o FILE" in refused.output


# -- found in review: each failed before its fix ----------------------------------------


def test_a_duplicate_row_with_its_seq_written_as_a_float_is_caught(sealed, keys, tmp_path):
    data, made = export_with_proof(sealed, tmp_path, "ndjson", tenant_id=ALL_TENANTS)
    first = json.loads(data.split(b"\n")[0])
    first["seq"] = float(first["seq"])
    forged = data + json.dumps(first).encode() + b"\n"
    copied = json.loads(json.dumps(made))
    extra = {**copied["entries"][0], "row": 16, "seq": float(copied["entries"][0]["seq"])}
    copied["entries"].append(extra)
    assert bundle.check(_resealed(copied, forged), forged, ring(keys[1]))


def test_extra_cells_and_loosely_equal_values_are_caught(sealed, keys, tmp_path):
    data, made = export_with_proof(sealed, tmp_path, "csv", tenant_id=ALL_TENANTS)
    lines = data.split(b"\n")
    lines[1] += b',=HYPERLINK("http://evil","click")'
    extra = b"\n".join(lines)
    found = bundle.check(_resealed(made, extra), extra, ring(keys[1]))
    assert any(p.startswith("row 1: has") for p in found)
    ndjson, made = export_with_proof(sealed, tmp_path, "ndjson", tenant_id=ALL_TENANTS)
    loose = ndjson.replace(b'"passkey": false', b'"passkey": 0', 1)
    assert loose != ndjson
    assert any(p.startswith("row 1:") for p in bundle.check(_resealed(made, loose), loose, {}))


def test_honest_exports_with_odd_text_check_clean(db_url, keys, tmp_path):
    auditor = Auditor(db_url, signing_key=keys[0].read_bytes(), seal_grace=dt.timedelta(0))
    auditor.create_all()
    put(auditor, actor=Actor.user("u", "a\u2028b\x85c"), entity=("t", ""))
    put(auditor, after={"body": "x" * 140_000}, entity=("t", "big"))
    for fmt in ("csv", "ndjson"):
        data, made = export_with_proof(auditor, tmp_path, fmt, tenant_id=ALL_TENANTS)
        assert bundle.check(made, data, ring(keys[1])) == [], fmt


def test_a_proof_dropped_or_rows_reordered_with_the_bundle_is_caught(sealed, keys, tmp_path):
    data, made = export_with_proof(sealed, tmp_path, "ndjson", tenant_id=ALL_TENANTS)
    dropped = json.loads(json.dumps(made))
    dropped["entries"][0]["proof"] = None
    assert any("no proof" in p for p in bundle.check(dropped, data, ring(keys[1])))
    lines = data.split(b"\n")
    swapped = b"\n".join([lines[1], lines[0], *lines[2:]])
    both = json.loads(json.dumps(made))
    both["entries"][0], both["entries"][1] = both["entries"][1], both["entries"][0]
    found = bundle.check(_resealed(both, swapped), swapped, ring(keys[1]))
    assert any("row 1" in p for p in found)


def test_malformed_input_is_a_problem_not_a_crash(keys):
    assert bundle.check([], b"", ring(keys[1])) == [f"not a {bundle.FORMAT} bundle"]
    broken = {"format": bundle.FORMAT, "export": {"format": "ndjson"}, "entries": []}
    assert any("cannot be read" in p for p in bundle.check(broken, b"\xff\xfe", ring(keys[1])))


def test_an_export_iterator_closed_before_it_starts_is_recorded(engine):
    auditor = Auditor(engine)
    auditor.create_all()
    put(auditor)
    chunks = auditor.iter_export("csv", tenant_id="org_1")
    chunks.close()
    ends = auditor.list(tenant_id="org_1", action="audit_log.export").entries
    assert [e.metadata["status"] for e in ends] == ["abandoned", "started"]
