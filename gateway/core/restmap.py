"""REST path, method and header mapping for a legacy REST backend: matching a federation endpoint, no I/O.

A service's ``legacy-rest`` adapter lists routes. Each maps a federation endpoint (a method and a path template
such as ``/persons/{id}``) to what the legacy backend expects: its own method and path, extra query parameters,
and headers set, renamed or removed. Path parameters may be used in the backend path, query values and set
headers. Everything is checked when the configuration loads (``check_route``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, quote, urlencode

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class RouteError(ValueError):
    """A route that cannot work; the message names the field."""


@dataclass(frozen=True)
class Route:
    method: str  # a method, or "*"
    path: str
    backend_method: str | None
    backend_path: str
    query: Mapping[str, str]
    set_headers: Mapping[str, str]
    rename_headers: Mapping[str, str]
    remove_headers: Sequence[str]
    json_response: bool


@dataclass(frozen=True)
class BackendRequest:
    method: str
    path_and_query: str  # to append to the service's base URL
    headers: list[tuple[str, str]]


def parameters(template: str) -> list[str]:
    return _PARAM.findall(template)


@lru_cache(maxsize=256)
def _pattern(template: str) -> re.Pattern[str]:
    out, last = [], 0
    for match in _PARAM.finditer(template):
        out.append(re.escape(template[last:match.start()]))
        out.append(f"(?P<{match.group(1)}>[^/]+)")
        last = match.end()
    out.append(re.escape(template[last:]))
    return re.compile("".join(out))


def check_route(route: Route) -> None:
    """Raise RouteError naming the field if ``route`` is not usable."""
    if route.method != "*" and route.method not in METHODS:
        raise RouteError(f"method: {route.method!r} is not an HTTP method (or *)")
    if route.backend_method is not None and route.backend_method not in METHODS:
        raise RouteError(f"backend_method: {route.backend_method!r} is not an HTTP method")
    for name, value in (("path", route.path), ("backend_path", route.backend_path)):
        if not value.startswith("/"):
            raise RouteError(f"{name}: {value!r} must start with /")
    defined = parameters(route.path)
    if len(set(defined)) != len(defined):
        raise RouteError(f"path: {route.path!r} names a parameter twice")
    used = [("backend_path", p) for p in parameters(route.backend_path)]
    used += [(f"query.{k}", p) for k, v in route.query.items() for p in parameters(v)]
    used += [(f"set_headers.{k}", p) for k, v in route.set_headers.items() for p in parameters(v)]
    for where, name in used:
        if name not in defined:
            raise RouteError(f"{where}: {{{name}}} is not a parameter of path {route.path!r}"
                             + (f" (it has {', '.join(defined)})" if defined else " (it has none)"))


def match(routes: Sequence[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The first route whose method and path template match, with the path parameters."""
    for route in routes:
        if route.method not in ("*", method):
            continue
        found = _pattern(route.path).fullmatch(path or "/")
        if found:
            return route, found.groupdict()
    return None


def _fill(template: str, params: Mapping[str, str], escape: bool) -> str:
    return _PARAM.sub(lambda m: quote(params[m.group(1)], safe="") if escape else params[m.group(1)], template)


def backend_request(route: Route, params: Mapping[str, str], method: str, query: str,
                    headers: Sequence[tuple[str, str]]) -> BackendRequest:
    """What to send the legacy backend for a matched call: its method, path and query, and headers."""
    pairs = parse_qsl(query, keep_blank_values=True) + [(k, _fill(v, params, False)) for k, v in route.query.items()]
    path = _fill(route.backend_path, params, True) + (f"?{urlencode(pairs)}" if pairs else "")
    removed = {h.lower() for h in route.remove_headers}
    renamed = {k.lower(): v for k, v in route.rename_headers.items()}
    replaced = {k.lower() for k in route.set_headers}
    out = [(renamed.get(k.lower(), k), v) for k, v in headers
           if k.lower() not in removed and renamed.get(k.lower(), k).lower() not in replaced]
    out += [(k, _fill(v, params, False)) for k, v in route.set_headers.items()]
    return BackendRequest(route.backend_method or method, path, out)
