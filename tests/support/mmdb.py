"""Build tiny MaxMind DB files for tests, so no real GeoLite2 download is ever needed.

The records copy the shape of MaxMind's GeoIP2/GeoLite2 Country and City databases, which is
what ``geoip2.database.Reader`` turns into its model objects.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netaddr
from mmdb_writer import MMDBWriter

# Real geoname ids, so records look like MaxMind's own; unknown codes still work, just with
# fewer fields.
_COUNTRIES: dict[str, tuple[int, str, str]] = {
    "GB": (2635167, "United Kingdom", "EU"),
    "DE": (2921044, "Germany", "EU"),
    "FR": (3017382, "France", "EU"),
    "US": (6252001, "United States", "NA"),
    "JP": (1861060, "Japan", "AS"),
    "BR": (3469034, "Brazil", "SA"),
    "AU": (2077456, "Australia", "OC"),
}
_CONTINENTS: dict[str, tuple[int, str]] = {
    "EU": (6255148, "Europe"),
    "NA": (6255149, "North America"),
    "AS": (6255147, "Asia"),
    "SA": (6255150, "South America"),
    "OC": (6255151, "Oceania"),
}
_CAPITALS: dict[str, str] = {
    "GB": "London",
    "DE": "Berlin",
    "FR": "Paris",
    "US": "Washington",
    "JP": "Tokyo",
    "BR": "Brasília",
    "AU": "Canberra",
}


def _country_record(iso_code: str) -> dict[str, Any]:
    geoname_id, name, continent_code = _COUNTRIES.get(iso_code, (0, iso_code, ""))
    country: dict[str, Any] = {"iso_code": iso_code, "names": {"en": name}}
    if geoname_id:
        country["geoname_id"] = geoname_id
    record: dict[str, Any] = {"country": country, "registered_country": dict(country)}
    if continent_code:
        continent_id, continent_name = _CONTINENTS[continent_code]
        record["continent"] = {
            "code": continent_code,
            "geoname_id": continent_id,
            "names": {"en": continent_name},
        }
    return record


def _city_record(iso_code: str) -> dict[str, Any]:
    record = _country_record(iso_code)
    record["city"] = {"names": {"en": _CAPITALS.get(iso_code, "Somewhere")}}
    # A float, so the DOUBLE type goes through the writer and reader too.
    record["location"] = {"accuracy_radius": 100, "latitude": 51.5, "longitude": -0.1}
    return record


def _write(
    path: str | os.PathLike[str],
    mapping: dict[str, str],
    database_type: str,
    make_record: Callable[[str], dict[str, Any]],
) -> Path:
    # ip_version=6 with ipv4_compatible=True is the layout MaxMind ships: IPv4 networks live
    # under ::/96, which is where readers look IPv4 addresses up in an IPv6 tree.
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description={"en": f"whodid test {database_type} database"},
    )
    for cidr, iso_code in mapping.items():
        writer.insert_network(netaddr.IPSet([cidr]), make_record(iso_code))
    out = Path(path)
    # to_db_file is annotated as taking str only.
    writer.to_db_file(str(out))
    return out


def build_country_mmdb(
    path: str | os.PathLike[str],
    mapping: dict[str, str],
    database_type: str = "GeoLite2-Country",
) -> Path:
    """Write a Country database mapping CIDRs (``"81.2.69.0/24"``) to ISO codes (``"GB"``).

    Networks are inserted in ``mapping`` order and a later one wins where they overlap: a
    supernet inserted after its subnets erases them. IPv4 networks sit under ``::/96``, so
    list IPv6 networks such as ``::/1`` before IPv4 ones.
    """
    return _write(path, mapping, database_type, _country_record)


def build_city_mmdb(
    path: str | os.PathLike[str],
    mapping: dict[str, str],
    database_type: str = "GeoLite2-City",
) -> Path:
    """Like :func:`build_country_mmdb`, with City records (city name and location added)."""
    return _write(path, mapping, database_type, _city_record)
