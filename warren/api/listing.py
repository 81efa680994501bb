"""RabbitMQ's query parameters on the management API's listings: ``columns``, ``sort``,
``sort_reverse``, and pagination (``page``, ``page_size``, ``name``, ``use_regex``). Pure."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from warren.api.http import HTTPProblem

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500  # RabbitMQ's limit


def pick_columns(item: dict[str, Any], columns: list[list[str]]) -> dict[str, Any]:
    """Keep the named (possibly dotted: ``arguments.x-max-length``) keys of one object; a dotted
    key whose parent exists keeps the parent, as RabbitMQ does (``{"arguments": {}}``)."""
    picked: dict[str, Any] = {}
    for path in columns:
        source: Any = item
        target = picked
        for depth, key in enumerate(path):
            if not isinstance(source, dict) or key not in source:
                break
            if depth == len(path) - 1:
                target[key] = source[key]
            else:
                source = source[key]
                target = target.setdefault(key, {})
    return picked


def _columns(query: Mapping[str, str]) -> list[list[str]] | None:
    raw = query.get("columns")
    if not raw:
        return None
    return [c.strip().split(".") for c in raw.split(",") if c.strip()]


def _sort_key(path: list[str]) -> Any:
    def key(item: dict[str, Any]) -> tuple[int, Any]:
        value: Any = item
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, bool | int | float):
            return (0, value)
        if value is None:
            return (2, "")
        return (1, str(value))
    return key


def shape_object(query: Mapping[str, str], item: dict[str, Any]) -> dict[str, Any]:
    columns = _columns(query)
    return pick_columns(item, columns) if columns else item


def shape_listing(query: Mapping[str, str], items: list[dict[str, Any]]) -> list[dict[str, Any]] | dict[str, Any]:
    """Sort, filter and page ``items``; a ``page`` parameter turns the answer into RabbitMQ's
    page object (``items``, ``page``, ``page_count``, ``filtered_count``, ``total_count``...)."""
    sort = query.get("sort")
    if sort:
        items = sorted(items, key=_sort_key(sort.split(".")),
                       reverse=query.get("sort_reverse", "false").lower() == "true")
    columns = _columns(query)
    if "page" not in query:
        return [pick_columns(i, columns) for i in items] if columns else items
    try:
        page = int(query["page"])
        page_size = int(query.get("page_size", DEFAULT_PAGE_SIZE))
    except ValueError:
        raise HTTPProblem(400, "bad_request", "Pagination parameters are invalid") from None
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise HTTPProblem(400, "invalid_pagination_parameters",
                          f"Invalid pagination parameters: page number {query.get('page')}, "
                          f"page size {query.get('page_size', DEFAULT_PAGE_SIZE)}")
    total = len(items)
    name = query.get("name")
    if name:
        if query.get("use_regex", "false").lower() == "true":
            try:
                pattern = re.compile(name)
            except re.error as error:
                raise HTTPProblem(400, "bad_request", f"invalid name regex '{name}': {error}") from None
            items = [i for i in items if pattern.search(str(i.get("name", "")))]
        else:
            items = [i for i in items if name.lower() in str(i.get("name", "")).lower()]
    page_count = math.ceil(len(items) / page_size)
    if page > max(1, page_count):
        raise HTTPProblem(400, "page_out_of_range",
                          f"Page out of range, page: {page} page size: {page_size}, len: {total}")
    shown = items[(page - 1) * page_size: page * page_size]
    return {
        "filtered_count": len(items),
        "item_count": len(shown),
        "items": [pick_columns(i, columns) for i in shown] if columns else shown,
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total,
    }
