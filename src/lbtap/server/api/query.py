"""Neutron collection query strings → ``ListQuery``, and pagination links back.

Neutron's GET on a collection takes attribute filters (a repeated key means OR),
``fields`` (repeatable), ``sort_key``/``sort_dir`` pairs and ``limit``/``marker``/
``page_reverse``. This module only splits and type-checks the reserved parameters;
whether a filter or sort key names a real attribute (and what its value means) is for
Services to decide, so that there is a single source of truth for the data model.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.datastructures import URL, QueryParams

from lbtap.server.errors import BadRequest
from lbtap.server.services.query import ListQuery

RESERVED = frozenset({"fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse"})

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

# Neutron caps a page; asking for more is not an error, it just gets this many.
MAX_LIMIT = 10000


@dataclass(frozen=True)
class CollectionQuery:
    """A parsed collection request: what Services see plus the API-only ``fields``."""

    query: ListQuery
    fields: tuple[str, ...]


def parse_bool(name: str, value: str) -> bool:
    """Neutron's boolean converter for query strings (true/false/1/0, any case)."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise BadRequest(f"Invalid value '{value}' for {name}: expected a boolean.", type_name="InvalidInput")


def parse_fields(params: QueryParams) -> tuple[str, ...]:
    """``fields=a&fields=b`` or ``fields=a,b``; empty entries are ignored."""
    out: list[str] = []
    for raw in params.getlist("fields"):
        out.extend(f for f in (p.strip() for p in raw.split(",")) if f)
    return tuple(dict.fromkeys(out))


def _parse_limit(params: QueryParams) -> int | None:
    values = params.getlist("limit")
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("Only one limit may be given.", type_name="InvalidInput")
    raw = values[0].strip()
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"Limit must be an integer 0 or greater and not '{values[0]}'.",
                         type_name="InvalidInput") from None
    if limit < 0:
        raise BadRequest(f"Limit must be an integer 0 or greater and not '{values[0]}'.",
                         type_name="InvalidInput")
    # limit=0 means "no limit" in Neutron.
    return min(limit, MAX_LIMIT) or None


def _parse_sorts(params: QueryParams) -> list[tuple[str, bool]]:
    keys = [k.strip() for k in params.getlist("sort_key")]
    dirs = [d.strip().lower() for d in params.getlist("sort_dir")]
    if any(not k for k in keys):
        raise BadRequest("sort_key must not be empty.", type_name="InvalidInput")
    for d in dirs:
        if d not in ("asc", "desc"):
            raise BadRequest(f"{d!r} is an invalid value for sort_dir, valid values are 'asc' and 'desc'.",
                             type_name="InvalidInput")
    if dirs and len(dirs) != len(keys):
        raise BadRequest("The number of sort_keys and sort_dirs must be the same.", type_name="InvalidInput")
    if not dirs:
        dirs = ["asc"] * len(keys)
    return [(k, d == "asc") for k, d in zip(keys, dirs)]


def _single(params: QueryParams, name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"Only one {name} may be given.", type_name="InvalidInput")
    return values[0] if values else None


def parse_collection_query(params: QueryParams) -> CollectionQuery:
    """Split a collection query string; raises BadRequest for malformed reserved keys."""
    filters: dict[str, list[str]] = {}
    for key, value in params.multi_items():
        if key not in RESERVED:
            filters.setdefault(key, []).append(value)
    marker = _single(params, "marker")
    if marker is not None and not marker.strip():
        marker = None
    page_reverse_raw = _single(params, "page_reverse")
    page_reverse = parse_bool("page_reverse", page_reverse_raw) if page_reverse_raw is not None else False
    query = ListQuery(
        filters=filters,
        sorts=_parse_sorts(params),
        limit=_parse_limit(params),
        marker=marker,
        page_reverse=page_reverse,
    )
    return CollectionQuery(query=query, fields=parse_fields(params))


def project(item: dict, fields: tuple[str, ...]) -> dict:
    """Keep only the requested attributes (all of them when none were requested)."""
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


def _href(url: URL, params: QueryParams, **changes: str | None) -> str:
    items = [(k, v) for k, v in params.multi_items() if k not in changes]
    items.extend((k, v) for k, v in changes.items() if v is not None)
    return str(url.replace(query=urlencode(items)))


def pagination_links(url: URL, params: QueryParams, query: ListQuery, items: list[dict],
                     has_more: bool) -> list[dict]:
    """Neutron's ``<collection>_links``: next/previous hrefs keyed on item ids.

    Forward paging: "next" while Services report more items, "previous" once a marker
    was used. Reverse paging mirrors that. Unlike Neutron, which guesses from a full
    page, ``has_more`` is exact, so a client never fetches an empty last page.
    """
    if not query.limit or not items:
        return []
    first, last = items[0].get("id"), items[-1].get("id")
    if first is None or last is None:
        return []
    more_after = has_more if not query.page_reverse else query.marker is not None
    more_before = query.marker is not None if not query.page_reverse else has_more
    links = []
    if more_after:
        links.append({"rel": "next", "href": _href(url, params, marker=str(last), page_reverse=None)})
    if more_before:
        links.append({"rel": "previous", "href": _href(url, params, marker=str(first), page_reverse="True")})
    return links
