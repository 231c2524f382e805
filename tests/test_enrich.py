"""Tests of whodid.store.enrich: GeoIP country lookup and User-Agent parsing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import user_agents

from support.mmdb import build_city_mmdb, build_country_mmdb
from whodid.errors import ConfigurationError
from whodid.store.enrich import Enricher, default_enricher

MAPPING = {
    "81.2.69.0/24": "GB",
    "2a02:db8::/32": "DE",
    "216.160.83.0/24": "US",
}

PRIVATE_OR_LOCAL = [
    "10.0.0.1",
    "192.168.1.1",
    "172.16.5.4",
    "127.0.0.1",
    "100.64.0.1",  # carrier-grade NAT
    "169.254.1.1",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "ff02::1",
    "::ffff:10.0.0.1",
    "2001:db8::1",  # documentation range
]

MALFORMED = [
    "not-an-ip",
    "",
    " ",
    "1.2.3.4.5",
    "999.1.1.1",
    "1.2.3",
    "81.2.69.1:443",
    "[2a02:db8::1]",
    "2a02:db8::1::1",
    "x" * 10000,
    "1" * 10000,
    "\x00",
    "81.2.69.1\x00",
    "\udc80",
    "\u0668\u0661.\u0662.\u0666\u0669.\u0661",  # 81.2.69.1 in Arabic-Indic digits
]

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture
def country_db(tmp_path: Path) -> Path:
    return build_country_mmdb(tmp_path / "country.mmdb", MAPPING)


@pytest.fixture
def enricher(country_db: Path) -> Iterator[Enricher]:
    e = Enricher(country_db)
    yield e
    e.close()


# --- country -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("81.2.69.1", "GB"),
        ("81.2.69.255", "GB"),
        ("216.160.83.56", "US"),
        ("2a02:db8::1", "DE"),
        ("2a02:db8:ffff::abcd", "DE"),
        ("2A02:DB8::1", "DE"),
        ("  81.2.69.1 ", "GB"),
        # An IPv4 client on a dual-stack socket.
        ("::ffff:81.2.69.1", "GB"),
    ],
)
def test_country_found(enricher: Enricher, ip: str, expected: str) -> None:
    assert enricher.country(ip) == expected


@pytest.mark.parametrize("ip", ["81.2.70.1", "8.8.8.8", "2a03::1", "2606:4700::1111"])
def test_country_not_in_database(enricher: Enricher, ip: str) -> None:
    assert enricher.country(ip) is None


@pytest.mark.parametrize("ip", PRIVATE_OR_LOCAL)
def test_country_private_and_special_addresses(tmp_path: Path, ip: str) -> None:
    # Map the private ranges too, so None proves they were refused, not merely unknown. IPv6
    # goes first: IPv4 lives under ::/96, and mmdb-writer lets a later supernet erase it.
    db = build_country_mmdb(
        tmp_path / "all.mmdb",
        {"::/1": "DE", "8000::/1": "DE", "0.0.0.0/1": "GB", "128.0.0.0/1": "GB"},
    )
    with Enricher(db) as e:
        assert e.country("81.2.69.1") == "GB"
        assert e.country(ip) is None


@pytest.mark.parametrize("ip", MALFORMED, ids=lambda ip: repr(ip[:20]))
def test_country_malformed(enricher: Enricher, ip: str) -> None:
    assert enricher.country(ip) is None


@pytest.mark.parametrize("ip", [None, 12345, b"81.2.69.1", 3.5, ["81.2.69.1"]])
def test_country_wrong_types(enricher: Enricher, ip: object) -> None:
    assert enricher.country(ip) is None  # type: ignore[arg-type]


def test_country_without_database() -> None:
    e = Enricher()
    for ip in ["81.2.69.1", "2a02:db8::1", "10.0.0.1", "not-an-ip", "", None]:
        assert e.country(ip) is None
    e.close()


def test_country_accepts_path_and_str(country_db: Path) -> None:
    for db in (country_db, str(country_db)):
        with Enricher(db) as e:
            assert e.country("81.2.69.1") == "GB"


def test_city_database(tmp_path: Path) -> None:
    db = build_city_mmdb(tmp_path / "city.mmdb", MAPPING)
    with Enricher(db) as e:
        assert e.country("81.2.69.1") == "GB"
        assert e.country("2a02:db8::1") == "DE"
        assert e.country("8.8.8.8") is None
        assert e.country("10.0.0.1") is None


@pytest.mark.parametrize(
    "database_type", ["GeoIP2-Country", "GeoIP2-City", "GeoIP2-City-Europe", "DBIP-Country-Lite"]
)
def test_other_country_and_city_flavours(tmp_path: Path, database_type: str) -> None:
    db = build_country_mmdb(tmp_path / "x.mmdb", MAPPING, database_type=database_type)
    with Enricher(db) as e:
        assert e.country("81.2.69.1") == "GB"


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "GeoLite2-Country.mmdb"
    with pytest.raises(ConfigurationError, match="does not exist") as info:
        Enricher(missing)
    assert str(missing) in str(info.value)
    assert "GeoLite2-Country.mmdb" in str(info.value)
    # Callers that only know about ValueError still catch it.
    assert isinstance(info.value, ValueError)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        Enricher(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage" * 100, bytes(range(256)) * 10, b"\xab\xcd\xefMaxMind.com" + b"\x00" * 50],
)
def test_not_an_mmdb(tmp_path: Path, content: bytes) -> None:
    bogus = tmp_path / "bogus.mmdb"
    bogus.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        Enricher(bogus)
    assert str(bogus) in str(info.value)


def test_wrong_database_type(tmp_path: Path) -> None:
    db = build_country_mmdb(tmp_path / "asn.mmdb", MAPPING, database_type="GeoLite2-ASN")
    with pytest.raises(ConfigurationError, match="GeoLite2-ASN") as info:
        Enricher(db)
    assert str(db) in str(info.value)


@pytest.mark.parametrize("cache_size", [-1, 1.5, "10", True])
def test_bad_cache_size(cache_size: object) -> None:
    with pytest.raises(ConfigurationError, match="cache_size"):
        Enricher(cache_size=cache_size)  # type: ignore[arg-type]


def test_country_is_cached(enricher: Enricher, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    query = enricher._query
    assert query is not None

    def counting(address: object) -> object:
        calls.append(address)
        return query(address)  # type: ignore[arg-type]

    monkeypatch.setattr(enricher, "_query", counting)
    enricher._country_cached.cache_clear()

    for _ in range(3):
        assert enricher.country("81.2.69.1") == "GB"
        assert enricher.country("8.8.8.8") is None  # misses are cached as well
    # Same address, other spelling: one cache entry.
    assert enricher.country("::ffff:81.2.69.1") == "GB"
    assert len(calls) == 2
    info = enricher._country_cached.cache_info()
    assert (info.hits, info.misses) == (5, 2)


def test_cache_is_bounded(country_db: Path) -> None:
    with Enricher(country_db, cache_size=4) as e:
        for i in range(20):
            e.country(f"81.2.69.{i}")
        assert e._country_cached.cache_info().currsize == 4


def test_cache_size_zero_still_works(country_db: Path) -> None:
    with Enricher(country_db, cache_size=0) as e:
        assert e.country("81.2.69.1") == "GB"
        assert e.country("81.2.69.1") == "GB"


def test_reader_errors_are_swallowed_and_not_cached(
    enricher: Enricher, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = enricher._query

    def broken(address: object) -> object:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(enricher, "_query", broken)
    assert enricher.country("81.2.69.1") is None
    monkeypatch.setattr(enricher, "_query", query)
    assert enricher.country("81.2.69.1") == "GB"


def test_close(country_db: Path) -> None:
    e = Enricher(country_db)
    assert e.country("81.2.69.1") == "GB"
    e.close()
    assert e.country("81.2.69.1") is None
    e.close()  # idempotent
    assert e.client("curl/8.4.0") is not None


def test_concurrent_use(enricher: Enricher) -> None:
    errors: list[BaseException] = []
    ips = ["81.2.69.1", "2a02:db8::1", "8.8.8.8", "10.0.0.1", "junk"]
    expected = ["GB", "DE", None, None, None]

    def work() -> None:
        try:
            for _ in range(200):
                assert [enricher.country(ip) for ip in ips] == expected
                assert enricher.client(CHROME_MAC) is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- client ------------------------------------------------------------------------------


def test_client_chrome_desktop() -> None:
    assert Enricher().client(CHROME_MAC) == {
        "browser": "Chrome 120.0.6099",
        "os": "Mac OS X 10.15.7",
        "device": "Mac",
        "is_bot": False,
        "is_mobile": False,
        "is_tablet": False,
        "is_pc": True,
    }


def test_client_iphone_safari() -> None:
    info = Enricher().client(IPHONE_SAFARI)
    assert info is not None
    assert info["browser"] == "Mobile Safari 17.1"
    assert info["os"] == "iOS 17.1"
    assert info["device"] == "iPhone"
    assert info["is_mobile"] is True
    assert info["is_pc"] is False
    assert info["is_bot"] is False


def test_client_googlebot() -> None:
    info = Enricher().client(GOOGLEBOT)
    assert info is not None
    assert info["is_bot"] is True
    assert info["browser"] == "Googlebot 2.1"


def test_client_curl() -> None:
    info = Enricher().client("curl/8.4.0")
    assert info is not None
    assert info["browser"] == "curl 8.4.0"
    assert info["is_pc"] is False
    assert info["is_mobile"] is False


def test_client_httpx() -> None:
    info = Enricher().client("python-httpx/0.27.0")
    assert info is not None
    # ua-parser does not know httpx: every part reads "Other" and no flag is set.
    assert set(info) == {"browser", "os", "device", "is_bot", "is_mobile", "is_tablet", "is_pc"}
    assert all(isinstance(info[k], bool) for k in ("is_bot", "is_mobile", "is_tablet", "is_pc"))
    assert info["is_bot"] is False


@pytest.mark.parametrize("ua", [None, "", "   ", "\t\n"])
def test_client_empty(ua: str | None) -> None:
    assert Enricher().client(ua) is None


@pytest.mark.parametrize("ua", [42, b"curl/8.4.0", object()])
def test_client_wrong_types(ua: object) -> None:
    assert Enricher().client(ua) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ua",
    [
        "a" * 100_000,
        ";" * 100_000,
        "Mozilla/5.0 (" * 8000,
        CHROME_MAC * 1000,
        "\x00\x01\x02\x7f" * 25_000,
        "\udc80\ud800" * 1000,
        "".join(chr(c) for c in range(0x20, 0x3000)),
        "\u202e" + "🤖" * 5000,
    ],
    ids=lambda ua: f"{ua[:12]!r}-{len(ua)}",
)
def test_client_hostile_input_is_fast(ua: str) -> None:
    start = time.perf_counter()
    info = Enricher().client(ua)
    assert time.perf_counter() - start < 1.0
    assert info is None or isinstance(info, dict)


def test_client_truncates_long_headers() -> None:
    # Anything past 512 characters is ignored, so the real UA still parses.
    info = Enricher().client(CHROME_MAC + " " + "x" * 100_000)
    assert info is not None
    assert info["browser"] == "Chrome 120.0.6099"


def test_client_returns_fresh_dicts() -> None:
    e = Enricher()
    first = e.client(CHROME_MAC)
    assert first is not None
    first["browser"] = "tampered"
    assert e.client(CHROME_MAC) == {**first, "browser": "Chrome 120.0.6099"}


def test_client_parser_failure_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(ua: str) -> object:
        raise RuntimeError("regex blew up")

    monkeypatch.setattr(user_agents, "parse", explode)
    # A UA no other test uses, so it cannot come from the cache.
    assert Enricher().client("whodid-test-agent/1.0 (explode)") is None


def test_default_enricher() -> None:
    e = default_enricher()
    assert default_enricher() is e
    assert e.country("81.2.69.1") is None
    info = e.client(GOOGLEBOT)
    assert info is not None
    assert info["is_bot"] is True
