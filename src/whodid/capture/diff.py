"""The before/after sides of an update, down to the nested keys that changed.

For a JSON column, showing both whole documents hides the one key that
changed. :func:`nested_change` keeps only the changed branches on each side:
a key added appears in ``after`` only, a key removed in ``before`` only, and a
list that changed is shown whole (positions in a list are not stable names).
"""

from __future__ import annotations

from typing import Any

_MISSING: Any = object()


def nested_change(old: Any, new: Any) -> tuple[Any, Any]:
    """The parts of ``old`` and ``new`` (JSON data) that differ.

    Returns ``(before, after)``; a side is :data:`_MISSING` when the value did
    not exist there. Only dicts are narrowed; anything else is returned whole.
    """
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old, new
    # deepdiff is imported lazily: it is slow to import and only needed when a
    # nested document actually changed.
    from deepdiff import DeepDiff

    diff = DeepDiff(old, new, view="tree", verbose_level=2)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for changes in diff.values():
        for change in changes:
            path = _dict_path(change.path(output_format="list"), old, new)
            _copy_branch(old, path, before)
            _copy_branch(new, path, after)
    return before, after


def _dict_path(path: list[Any], old: Any, new: Any) -> list[Any]:
    """``path`` cut before the first step into a list, so lists are shown whole."""
    cut: list[Any] = []
    a, b = old, new
    for key in path:
        if not (isinstance(a, dict) or isinstance(b, dict)):
            break
        cut.append(key)
        a = a.get(key, _MISSING) if isinstance(a, dict) else _MISSING
        b = b.get(key, _MISSING) if isinstance(b, dict) else _MISSING
    return cut


def _copy_branch(source: Any, path: list[Any], target: dict[str, Any]) -> None:
    """Copy ``source`` at ``path`` into ``target``, creating the dicts between."""
    node = source
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return
        node = node[key]
    if not path:
        return
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = node
