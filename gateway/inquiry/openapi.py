"""The OpenAPI 3.1 document of the inquiry service's JSON API."""

from __future__ import annotations

from typing import Any


def _param(name: str, description: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


_TIME = [
    _param("from", "Start of the range: Unix milliseconds or ISO 8601 (UTC unless it says otherwise)."),
    _param("to", "End of the range (exclusive); default now."),
    _param("last", "Instead of from/to: the last 15m, 1h, 24h, 7d ...", {"type": "string", "pattern": r"^\d+[smhd]$"}),
]
_PARTIES = [
    _param("client", "The calling agency (INST/CLASS/CODE) or subsystem (INST/CLASS/CODE/SUB)."),
    _param("provider", "The providing agency or subsystem."),
    _param("service", "A service, INST/CLASS/CODE/SUB/serviceCode; a version is ignored."),
]
_GATEWAYS = {
    "type": "object",
    "description": "Which gateways answered. A gateway that is down, slow or refuses is listed, never hidden.",
    "properties": {
        "complete": {"type": "boolean"},
        "unanswered": {"type": "array", "items": {"type": "string"}},
        "gateways": {"type": "array", "items": {"$ref": "#/components/schemas/GatewayStatus"}},
    },
}
_ERRORS = {
    "400": {"description": "Bad parameter", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}},
    "503": {"description": "No global configuration yet", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}},
}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}, **_ERRORS}


def document(version: str = "1") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Wasl unified inquiry", "version": version,
                 "description": "Every transaction between the federation's agencies, from the operational records "
                                "of every gateway, joined by X-Road id. See docs/monitoring.md."},
        "paths": {
            "/api/v1/transaction": {"get": {
                "operationId": "getTransaction",
                "summary": "One transaction by X-Road id or W3C trace id: both sides, timeline, where time went",
                "parameters": [_param("xroad_id", "The X-Road-Id (messageId)."),
                               _param("trace_id", "The 32 hex digits of a W3C traceparent's trace id.")],
                "responses": _ok("The matching transactions (an X-Road id is chosen by callers, so it may match "
                                 "several)", {"allOf": [_GATEWAYS, {"type": "object", "properties": {
                                     "transactions": {"type": "array",
                                                      "items": {"$ref": "#/components/schemas/Transaction"}}}}]}),
            }},
            "/api/v1/transactions": {"get": {
                "operationId": "listTransactions",
                "summary": "Transactions in a time range, newest first, filtered, one page at a time",
                "parameters": [*_TIME, *_PARTIES,
                               _param("status", "any, ok or failed", {"enum": ["any", "ok", "failed"]}),
                               _param("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 200}),
                               _param("cursor", "next_cursor of the previous page")],
                "responses": _ok("A page", {"allOf": [_GATEWAYS, {"type": "object", "properties": {
                    "transactions": {"type": "array", "items": {"$ref": "#/components/schemas/Transaction"}},
                    "next_cursor": {"type": ["string", "null"]}}}]}),
            }},
            "/api/v1/aggregates": {"get": {
                "operationId": "getAggregates",
                "summary": "Counts, error rates and latency percentiles per agency pair, per service and over time",
                "parameters": [*_TIME, *_PARTIES,
                               _param("buckets", "Points in the time series", {"type": "integer", "minimum": 1,
                                                                               "maximum": 500})],
                "responses": _ok("Aggregates", {"allOf": [_GATEWAYS, {"$ref": "#/components/schemas/Aggregates"}]}),
            }},
            "/api/v1/gateways": {"get": {
                "operationId": "getGatewayHealth",
                "summary": "Each gateway's configuration age, certificate expiry, message log and timestamping",
                "responses": _ok("Health of every gateway", _GATEWAYS),
            }},
            "/livez": {"get": {"operationId": "livez", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"operationId": "readyz", "responses": {
                "200": {"description": "ready"}, "503": {"description": "not ready, with the reason"}}}},
            "/metrics": {"get": {"operationId": "metrics", "responses": {"200": {"description": "Prometheus"}}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["type", "message"], "properties": {
                "type": {"type": "string", "examples": ["Client.InvalidRequest"]},
                "message": {"type": "string"}, "detail": {"type": "string"}}},
            "GatewayStatus": {"type": "object", "required": ["server", "status"], "properties": {
                "server": {"type": "string"}, "ms": {"type": "number"}, "error": {"type": "string"},
                "status": {"enum": ["ok", "timeout", "unreachable", "denied", "error", "skipped"]}}},
            "Side": {"type": ["object", "null"], "description": "One gateway's operational record (no payload)",
                     "properties": {k: {} for k in (
                         "side", "gateway", "request_in_ms", "request_out_ms", "response_in_ms", "response_out_ms",
                         "xroad_id", "request_id", "user_id", "issue", "traceparent", "trace_id", "client",
                         "service", "protocol", "rest_method", "rest_path", "request_size", "response_size",
                         "status_code", "succeeded", "fault_code", "fault_message", "duration_ms", "backend_ms",
                         "overhead_ms", "client_server", "service_server")}},
            "Transaction": {"type": "object", "properties": {
                "xroad_id": {"type": "string"}, "request_id": {"type": "string"},
                "trace_id": {"type": ["string", "null"]}, "client": {"type": "string"},
                "service": {"type": "string"}, "started_ms": {"type": "integer"},
                "status": {"enum": ["ok", "failed"]}, "fault_code": {"type": ["string", "null"]},
                "fault_message": {"type": ["string", "null"]}, "duration_ms": {"type": ["number", "null"]},
                "complete": {"type": "boolean"},
                "missing_sides": {"type": "array", "items": {"enum": ["client", "provider"]}},
                "timeline": {"type": "array", "items": {"type": "object", "properties": {
                    "side": {"enum": ["client", "provider"]}, "event": {"type": "string"},
                    "at_ms": {"type": "integer"}, "offset_ms": {"type": "integer"}, "gateway": {"type": "string"}}}},
                "breakdown": {"type": "object", "properties": {k: {"type": ["number", "null"]} for k in (
                    "client_gateway_ms", "network_ms", "provider_gateway_ms", "backend_ms", "total_ms")}},
                "sides": {"type": "object", "properties": {"client": {"$ref": "#/components/schemas/Side"},
                                                           "provider": {"$ref": "#/components/schemas/Side"}}}}},
            "Aggregates": {"type": "object", "properties": {
                "totals": {"type": "object"}, "pairs": {"type": "array"}, "services": {"type": "array"},
                "matrix": {"type": "object"}, "series": {"type": "array"}, "slowest": {"type": "array"},
                "most_failing": {"type": "array"}, "faults": {"type": "array"}}},
        }},
    }
