"""Capture: who and where (the ASGI and WSGI middlewares), and what changed (the ORM hooks).

Fills the request's context (:mod:`whodid.context`) and turns ORM flushes into
changes for :mod:`whodid.store.writer`. Never imports the surfaces (web, cli,
export, demo).
"""
