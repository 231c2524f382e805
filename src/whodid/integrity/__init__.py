"""Integrity: signed checkpoints, verification, keys, and retention.

:mod:`~whodid.integrity.verify` (seal and verify), :mod:`~whodid.integrity.checkpoints`,
:mod:`~whodid.integrity.keys`, :mod:`~whodid.integrity.rows` /
:mod:`~whodid.integrity.ranges` / :mod:`~whodid.integrity.parallel` (how verify
reads and checks the log), :mod:`~whodid.integrity.retention` (the purge).
"""
