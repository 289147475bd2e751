"""X-Road REST protocol r1: request line and headers to a request model, and the headers that may cross."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from gateway.core import identifiers as ids
from gateway.core.faults import Code, Fault, Origin

PREFIX = "/r1/"
MAX_URI_LENGTH = 2000  # PR-REST suggests it; long URIs are a classic smuggling and DoS vector

# Headers that never cross a gateway (PR-REST §4.4): hop-by-hop, plus ones each hop sets itself.
_DROPPED = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "user-agent", "server", "content-length", "date", "expect",
})
XROAD_HEADER_PREFIX = "x-road-"
TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class RestRequest:
    service: ids.ServiceId
    client: ids.ClientId
    method: str
    service_path: str  # percent-encoded as received, "" or starting with "/"
    query: str
    xroad_id: str | None
    user_id: str | None
    issue: str | None
    security_server: ids.ServerId | None
    headers: tuple[tuple[str, str], ...]  # the ones that cross, lower-case names


def _segment(raw: str, name: str) -> str:
    try:
        value = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise Fault(Origin.CLIENT, Code.INVALID_REST,
                    f"request path: {name} is not valid percent-encoded UTF-8") from None
    try:
        return ids.check_part(name, value)
    except ids.IdentifierError as exc:
        raise Fault(Origin.CLIENT, Code.INVALID_SERVICE_IDENTIFIER, f"request path: {exc}") from None


def parse_target(raw_path: str) -> tuple[ids.ServiceId, str]:
    """Split ``/r1/INST/CLASS/MEMBER/SUB/serviceCode[/path]`` into the service and the service-relative path."""
    if len(raw_path) > MAX_URI_LENGTH:
        raise Fault(Origin.CLIENT, Code.INVALID_REST, f"request URI is longer than {MAX_URI_LENGTH} characters")
    if not raw_path.startswith(PREFIX):
        raise Fault(Origin.CLIENT, Code.INVALID_REST, "REST requests must start with /r1/")
    pieces = raw_path[len(PREFIX):].split("/", 5)
    if len(pieces) < 5 or not all(pieces[:5]):
        raise Fault(Origin.CLIENT, Code.INVALID_SERVICE_IDENTIFIER,
                    "request path must be /r1/{instance}/{memberClass}/{memberCode}/{subsystemCode}/{serviceCode}")
    names = ("xRoadInstance", "memberClass", "memberCode", "subsystemCode", "serviceCode")
    inst, mclass, mcode, sub, code = (_segment(p, n) for p, n in zip(pieces[:5], names, strict=True))
    rest = "/" + pieces[5] if len(pieces) == 6 else ""
    for segment in rest.split("/"):
        try:
            decoded = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise Fault(Origin.CLIENT, Code.INVALID_REST, "request path is not valid percent-encoded UTF-8") from None
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or "\x00" in decoded:
            raise Fault(Origin.CLIENT, Code.INVALID_REST, "request path contains a traversal or encoded separator")
    return ids.ServiceId(inst, mclass, mcode, sub, code), rest


def single_header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The value of a header that must not contradict itself: repeats must agree (HTTP parameter pollution)."""
    values = {v.strip() for k, v in headers if k.lower() == name}
    if len(values) > 1:
        raise Fault(Origin.CLIENT, Code.INCONSISTENT_HEADERS, f"header {name} is repeated with different values")
    return values.pop() if values else None


def crossing_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Headers passed to the other side: end-to-end ones only (including none that Connection names as
    hop-by-hop, RFC 9110 §7.6.1); X-Road's own are carried in the manifest."""
    headers = list(headers)
    named = {token.strip().lower() for k, v in headers if k.lower() == "connection" for token in v.split(",")}
    return tuple((k.lower(), v) for k, v in headers
                 if k.lower() not in _DROPPED and k.lower() not in named
                 and not k.lower().startswith(XROAD_HEADER_PREFIX))


def parse_request(method: str, raw_path: str, query: str, headers: list[tuple[str, str]]) -> RestRequest:
    """Validate an r1 request from an information system into a ``RestRequest``."""
    if len(raw_path) + len(query) > MAX_URI_LENGTH:
        raise Fault(Origin.CLIENT, Code.INVALID_REST, f"request URI is longer than {MAX_URI_LENGTH} characters")
    service, service_path = parse_target(raw_path)
    client_text = single_header(headers, "x-road-client")
    if client_text is None:
        raise Fault(Origin.CLIENT, Code.MISSING_HEADER, "header X-Road-Client is missing")
    try:
        client = ids.parse_client(client_text)
    except ids.IdentifierError as exc:
        raise Fault(Origin.CLIENT, Code.INVALID_CLIENT_IDENTIFIER, f"X-Road-Client: {exc}") from None
    server_text = single_header(headers, "x-road-security-server")
    server = None
    if server_text:
        try:
            server = ids.parse_server(server_text)
        except ids.IdentifierError as exc:
            raise Fault(Origin.CLIENT, Code.INVALID_CLIENT_IDENTIFIER, f"X-Road-Security-Server: {exc}") from None
    xroad_id = single_header(headers, "x-road-id")
    if xroad_id is not None and (not xroad_id or len(xroad_id) > 255):
        raise Fault(Origin.CLIENT, Code.INVALID_REST, "X-Road-Id must be 1 to 255 characters")
    return RestRequest(
        service=service, client=client, method=method.upper(), service_path=service_path, query=query,
        xroad_id=xroad_id, user_id=single_header(headers, "x-road-userid"),
        issue=single_header(headers, "x-road-issue"), security_server=server,
        headers=crossing_headers(headers),
    )
