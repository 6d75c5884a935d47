"""Collection queries: what the API asks for (``ListQuery``) and what it gets back.

Sorting and paging are done here, in Python, over light rows (id + sort keys) that the
services select with their filters applied in SQL. Doing the ordering in Python keeps
it identical on SQLite, PostgreSQL and MariaDB (NULL placement and string collation
differ between them), and makes a marker that no longer matches the filters still
page correctly: it is placed by its sort-key values, as Neutron does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class ListQuery:
    """One collection GET.

    ``filters``: raw query-string values per attribute; a repeated key means OR; an
    unknown key is a BadRequest. ``sorts``: (attribute, ascending) pairs; unknown or
    unsortable keys are a BadRequest. ``marker``: id of the last item of the previous
    page; an unknown marker is a 404 of the resource. ``page_reverse``: page backwards
    from the marker (items are still returned in the requested order).
    """

    filters: dict[str, list[str]] = field(default_factory=dict)
    sorts: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None
    marker: str | None = None
    page_reverse: bool = False


@dataclass(frozen=True)
class ListResult:
    """One page: the items and whether another page exists in the paging direction."""

    items: list[dict]
    has_more: bool


def _key_part(value: Any) -> tuple:
    # NULLs first on every backend; bools/ints/strings compare within their own kind.
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


class _Desc:
    """Inverts the ordering of a key part for descending sorts."""

    __slots__ = ("v",)

    def __init__(self, v: tuple):
        self.v = v

    def __lt__(self, other: "_Desc") -> bool:
        return other.v < self.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and other.v == self.v


def sort_key(sorts: list[tuple[str, bool]]) -> Callable[[dict], tuple]:
    """Key function over light rows; ``id`` ascending always breaks ties."""
    order = list(sorts)
    if not any(name == "id" for name, _ in order):
        order.append(("id", True))

    def key(row: dict) -> tuple:
        return tuple(
            _key_part(row.get(name)) if asc else _Desc(_key_part(row.get(name)))  # type: ignore[misc]
            for name, asc in order
        )

    return key


def paginate(
    rows: list[dict],
    sorts: list[tuple[str, bool]],
    *,
    limit: int | None,
    marker_row: dict | None,
    page_reverse: bool,
) -> tuple[list[dict], bool]:
    """Order ``rows`` and cut one page after (or, reversed, before) ``marker_row``.

    Returns (page rows in the requested order, has_more in the paging direction).
    ``marker_row`` holds the marker's sort-key values; it need not be in ``rows``.
    """
    key = sort_key(sorts)
    ordered = sorted(rows, key=key)
    if page_reverse:
        ordered.reverse()
    if marker_row is not None:
        mk = key(marker_row)
        if page_reverse:
            ordered = [r for r in ordered if key(r) < mk]
        else:
            ordered = [r for r in ordered if mk < key(r)]
    has_more = False
    if limit is not None and limit > 0 and len(ordered) > limit:
        ordered = ordered[:limit]
        has_more = True
    if page_reverse:
        ordered.reverse()
    return ordered, has_more
