"""Store: the audit tables, writing entries, and reading them back.

:mod:`~whodid.store.schema` (tables, indexes, guards, upgrade),
:mod:`~whodid.store.writer` (changes into entry rows),
:mod:`~whodid.store.drivers` (every way rows reach or leave the table, per database),
:mod:`~whodid.store.query` and :mod:`~whodid.store.search` (filters, pages, ``q``),
:mod:`~whodid.store.partitions`, :mod:`~whodid.store.enrich` (country, client),
:mod:`~whodid.store.engines` (async engines and their sync twins).
Never imports capture or the surfaces.
"""
