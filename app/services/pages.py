"""One page of a query: the items, where they are, and how many match in all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select

from app.extensions import db


@dataclass(frozen=True, slots=True)
class Page:
    """A page of results, as the list endpoints answer it (app/schemas/common.py PageSchema)."""

    items: list[Any]
    page: int
    per_page: int
    total: int


def page_of(query: Select[Any], *order_by: Any, page: int, per_page: int) -> Page:
    """Page `page` (from 1) of `query` in `order_by` order, and the count of every row it matches."""
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    items = db.session.scalars(query.order_by(*order_by).offset((page - 1) * per_page).limit(per_page)).all()
    return Page(list(items), page, per_page, total)
