"""What every resource service shares: time, visibility, write checks, list and get.

A list runs in two steps: a light query (id, sort keys and columns needed by Python
filters) with the SQL filters and project visibility applied, then ``paginate`` in
Python, then the full load of just the page's ids.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.orm import Session

from lbtap.config import Settings
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.engine import Database
from lbtap.server.notifier import Notifier, NullNotifier
from lbtap.server.services import attributes
from lbtap.server.services.query import ListQuery, ListResult, paginate

log = logging.getLogger(__name__)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
TAG_FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")
CHUNK = 500  # ids per IN (...) clause


def fmt_time(dt: datetime | None) -> str | None:
    return dt.strftime(TIME_FORMAT) if dt is not None else None


def chunks(seq: list, n: int = CHUNK):  # noqa: ANN201
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def sees_all(ctx: Context) -> bool:
    """The unscoped admin sees every project's resources; anyone scoped sees their own
    (plus shared networks and their subnets)."""
    return ctx.is_admin and ctx.project_id is None


def check_can_write(ctx: Context) -> None:
    if not ctx.can_write:
        raise errors.PolicyNotAuthorized("The caller may only read (reader role)")


def check_owner(ctx: Context, project_id: str, what: str) -> None:
    """Writers may change only their own project's resources unless admin."""
    if not ctx.is_admin and project_id != ctx.project_id:
        raise errors.PolicyNotAuthorized(f"Changing another project's {what} is disallowed by policy")


def _tags_predicate(key: str, values: list[str]) -> Callable[[dict], bool]:
    wanted = {t for v in values for t in v.split(",") if t}

    def pred(row: dict) -> bool:
        have = set(row.get("tags") or ())
        if key == "tags":
            return wanted <= have
        if key == "tags-any":
            return bool(wanted & have)
        if key == "not-tags":
            return not wanted <= have
        return not (wanted & have)

    return pred


class ResourceService:
    """Base of the per-resource services; subclasses set the class attributes."""

    resource: str = ""
    model: Any = None
    not_found: type[errors.NotFound] = errors.NotFound

    def __init__(self, db: Database, settings: Settings, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.time):
        self.db = db
        self.settings = settings
        self.notifier = notifier or NullNotifier()
        self.clock = clock
        self.spec = attributes.ATTRIBUTES[self.resource]

    # -- helpers ------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc).replace(tzinfo=None, microsecond=0)

    def visibility(self, ctx: Context) -> ColumnElement[bool]:
        """SQL condition on ``self.model`` of what ``ctx`` may see."""
        if sees_all(ctx):
            return true()
        return self.model.project_id == ctx.project_id

    def missing(self, id: str) -> errors.NotFound:
        return self.not_found(f"{self.resource[:-1].capitalize()} {id} could not be found.")

    def fetch(self, session: Session, ctx: Context, id: str, *, for_update: bool = False) -> Any:
        """The visible row ``id`` or the resource's 404."""
        stmt = select(self.model).where(self.model.id == id, self.visibility(ctx))
        if for_update and self.db.dialect != "sqlite":
            stmt = stmt.with_for_update()
        row = session.scalars(stmt).first()
        if row is None:
            raise self.missing(id)
        return row

    # -- subclass hooks -----------------------------------------------------------
    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        """Full dicts of ``ids`` in that order (ids known visible)."""
        raise NotImplementedError

    def special_filter(self, ctx: Context, key: str, values: list[Any]) -> ColumnElement[bool]:
        raise errors.BadRequest(f"{key} is an invalid filter for {self.resource}")

    def python_filter(self, ctx: Context, key: str, values: list[Any]) -> tuple[str, Any, Callable[[dict], bool]] | None:
        """(light-row key, column, predicate) for filters done in Python, or None."""
        return None

    def post_filter_rows(self, ctx: Context, rows: list[dict]) -> list[dict]:
        return rows

    # -- reads ----------------------------------------------------------------------
    def get(self, ctx: Context, id: str) -> dict:
        def run(session: Session) -> dict:
            self.fetch(session, ctx, id)
            return self.load(session, ctx, [id])[0]

        return self.db.read(run)

    def list(self, ctx: Context, query: ListQuery) -> ListResult:
        attributes.check_sorts(self.resource, query.sorts, ctx)
        conds: list[ColumnElement[bool]] = [self.visibility(ctx)]
        light: dict[str, Any] = {"id": self.model.id}
        preds: list[Callable[[dict], bool]] = []
        for key, raw in query.filters.items():
            if key in TAG_FILTERS and "tags" in self.spec:
                light["tags"] = self.model.tags
                preds.append(_tags_predicate(key, raw))
                continue
            attr, values = attributes.filter_values(self.resource, key, raw, ctx)
            pyf = self.python_filter(ctx, key, values)
            if pyf is not None:
                name, col, pred = pyf
                if col is not None:
                    light[name] = col
                preds.append(pred)
            elif attr.special_filter:
                conds.append(self.special_filter(ctx, key, values))
            else:
                col = getattr(self.model, attr.column)
                non_null = [x for x in values if x is not None]
                cond = col.in_(non_null) if non_null else None
                if None in values:
                    cond = col.is_(None) if cond is None else (cond | col.is_(None))
                conds.append(cond)
        for key, _asc in query.sorts:
            light[key] = getattr(self.model, self.spec[key].column)

        def run(session: Session) -> ListResult:
            cols = list(light.values())
            names = list(light.keys())
            rows = [dict(zip(names, r)) for r in session.execute(select(*cols).where(*conds))]
            rows = [r for r in rows if all(p(r) for p in preds)]
            rows = self.post_filter_rows(ctx, rows)
            marker_row = None
            if query.marker:
                marker_row = next((r for r in rows if r["id"] == query.marker), None)
                if marker_row is None:
                    found = session.execute(
                        select(*cols).where(self.model.id == query.marker, self.visibility(ctx))
                    ).first()
                    if found is None:
                        raise self.missing(query.marker)
                    marker_row = dict(zip(names, found))
            page, has_more = paginate(rows, query.sorts, limit=query.limit, marker_row=marker_row,
                                      page_reverse=query.page_reverse)
            items = self.load(session, ctx, [r["id"] for r in page])
            return ListResult(items=items, has_more=has_more)

        return self.db.read(run)

    # -- writes: defaults raise -----------------------------------------------------
    def create_bulk(self, ctx: Context, bodies: list[dict]) -> list[dict]:
        raise errors.MethodNotAllowed(f"Creating {self.resource} is not supported.")

    def update(self, ctx: Context, id: str, body: dict) -> dict:
        raise errors.MethodNotAllowed(f"Updating {self.resource} is not supported.")

    def delete(self, ctx: Context, id: str) -> None:
        raise errors.MethodNotAllowed(f"Deleting {self.resource} is not supported.")

    def notify(self, method: str, *args: Any) -> None:
        """Call the notifier after commit; its failure must not fail the request,
        whose change is already committed (agents' reconcile repairs a lost cast)."""
        try:
            getattr(self.notifier, method)(*args)
        except Exception:
            log.exception("notifier %s failed", method)

    def bump(self, row: Any) -> None:
        """Standard-attribute bookkeeping of a changed row."""
        row.revision_number = (row.revision_number or 0) + 1
        row.updated_at = self.now()

    def std_fields(self, row: Any) -> dict[str, Any]:
        return {
            "tenant_id": row.project_id,
            "project_id": row.project_id,
            "description": row.description,
            "tags": list(row.tags or []),
            "created_at": fmt_time(row.created_at),
            "updated_at": fmt_time(row.updated_at),
            "revision_number": row.revision_number,
        }
