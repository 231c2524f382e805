"""The OpenAPI 3.1 document of the audit log API (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

from whodid.entry.fields import CONTENT_FIELDS
from whodid.store.query import ACTOR_TYPES, MAX_LIMIT

_STRING_FILTERS = {
    "feature": "Area of the platform, e.g. `payout`.",
    "operation": "`create`, `update`, `delete`, or any verb of a manual event.",
    "actor_id": "User id, API key id or job name.",
    "user_id": "Entries by this user (actor_type user).",
    "api_key_id": "Entries by this API key (actor_type api_key).",
    "entity_type": "Type of the affected resource, e.g. `payment`.",
    "entity_id": "Id of the affected resource, e.g. `pay_123`.",
    "request_id": "Every entry of one request.",
    "ip": "Client IP address, e.g. `203.0.113.7` or `2001:db8::1`.",
    "q": "Free text over every detail field: actor id and label or email, IP, request id, "
    "user agent, entity type and id, action, metadata, and the before and after values. "
    "Case-insensitive for ASCII letters.",
}


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _filter_params() -> list[dict[str, Any]]:
    params = [
        _param(
            "action",
            {"type": "array", "items": {"type": "string", "maxLength": 200}},
            "Dotted event name(s), e.g. `customer.create`; repeat or comma-separate.",
        ),
        _param("actor_type", {"type": "string", "enum": list(ACTOR_TYPES)}, "Kind of actor."),
        _param(
            "start_date",
            {"type": "string", "format": "date-time"},
            "ISO 8601 start of the range (inclusive); a date alone starts at its UTC midnight.",
        ),
        _param(
            "end_date",
            {"type": "string", "format": "date-time"},
            "ISO 8601 end of the range (inclusive); a date alone (`2026-03-31`) includes that "
            "whole UTC day. Lists span at most 366 days.",
        ),
    ]
    params += [
        _param(n, {"type": "string", "maxLength": 400}, d) for n, d in _STRING_FILTERS.items()
    ]
    params[0]["style"], params[0]["explode"] = "form", True
    return params


_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_ENTRY = {
    "type": "object",
    "required": [*CONTENT_FIELDS, "seq", "digest"],
    "properties": {
        **{name: {} for name in CONTENT_FIELDS},
        "id": {"type": "string", "pattern": "^log_[0-9A-Z]{26}$"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "passkey": {"type": "boolean"},
        "seq": {"type": "integer"},
        "digest": {"type": "string"},
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "Bad input", 401: "Anonymous", 403: "Not owner or admin", 404: "Not found"}
    return {
        str(c): {
            "description": names[c],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for c in codes
    }


def openapi_document(server_url: str = "/") -> dict[str, Any]:
    filters = _filter_params()
    return {
        "openapi": "3.1.0",
        "info": {"title": "whodid audit log API", "version": "1"},
        "servers": [{"url": server_url or "/"}],
        "paths": {
            "/audit-logs": {
                "get": {
                    "summary": "List entries, newest first, with cursor pagination",
                    "operationId": "listAuditLogs",
                    "parameters": [
                        *filters,
                        _param(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                            "Page size, 1 to 200 (default 50).",
                        ),
                        _param("cursor", {"type": "string"}, "next_cursor of the previous page."),
                    ],
                    "responses": {
                        "200": {
                            "description": "One page",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["data", "next_cursor"],
                                        "properties": {
                                            "data": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Entry"},
                                            },
                                            "next_cursor": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/audit-logs/actions": {
                "get": {
                    "summary": "Every distinct action name in the viewer's log, sorted",
                    "description": "The choices of the dashboard's action filter.",
                    "operationId": "listAuditLogActions",
                    "responses": {
                        "200": {
                            "description": "Action names, e.g. `customer.create`",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["data"],
                                        "properties": {
                                            "data": {"type": "array", "items": {"type": "string"}}
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(401, 403),
                    },
                }
            },
            "/audit-logs/export.csv": {
                "get": {
                    "summary": "Every matching entry as CSV (UTC, formula-safe), streamed",
                    "operationId": "exportAuditLogsCsv",
                    "parameters": filters,
                    "responses": {
                        "200": {
                            "description": "CSV file",
                            "content": {"text/csv": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/audit-logs/export.ndjson": {
                "get": {
                    "summary": "Every matching entry as NDJSON, streamed",
                    "operationId": "exportAuditLogsNdjson",
                    "parameters": filters,
                    "responses": {
                        "200": {
                            "description": "NDJSON file",
                            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/audit-logs/{entry_id}": {
                "get": {
                    "summary": "One entry with its related entries",
                    "operationId": "getAuditLog",
                    "parameters": [
                        {
                            "name": "entry_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The entry",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "allOf": [
                                            {"$ref": "#/components/schemas/Entry"},
                                            {
                                                "type": "object",
                                                "properties": {
                                                    "related": {
                                                        "type": "array",
                                                        "items": {
                                                            "$ref": "#/components/schemas/Entry"
                                                        },
                                                    }
                                                },
                                            },
                                        ]
                                    }
                                }
                            },
                        },
                        **_errors(401, 403, 404),
                    },
                }
            },
        },
        "components": {"schemas": {"Entry": _ENTRY, "Error": _ERROR}},
    }
