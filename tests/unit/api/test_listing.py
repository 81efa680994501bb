"""RabbitMQ's listing parameters, with the answers RabbitMQ 3.10.8 gave for the same queries."""

from __future__ import annotations

import pytest

from warren.api.http import HTTPProblem
from warren.api.listing import shape_listing, shape_object

QUEUES = [{"name": "aliveness-test", "messages": 0, "arguments": {}}] + [
    {"name": f"pg-{i}", "arguments": {"x-max-length": i} if i == 3 else {}} for i in range(5)]


def test_columns_keep_named_and_dotted_keys() -> None:
    assert shape_listing({"columns": "name,messages"}, QUEUES)[:2] == [  # type: ignore[index]
        {"name": "aliveness-test", "messages": 0}, {"name": "pg-0"}]
    picked = shape_listing({"columns": "name,arguments.x-max-length"}, QUEUES)
    assert picked[0] == {"name": "aliveness-test", "arguments": {}}  # type: ignore[index]
    assert picked[4] == {"name": "pg-3", "arguments": {"x-max-length": 3}}  # type: ignore[index]
    assert shape_object({"columns": "name"}, QUEUES[1]) == {"name": "pg-0"}
    assert shape_object({}, QUEUES[1]) is QUEUES[1]


def test_sort_and_reverse() -> None:
    names = [q["name"] for q in shape_listing({"sort": "name", "sort_reverse": "true"}, QUEUES)]  # type: ignore[index]
    assert names == ["pg-4", "pg-3", "pg-2", "pg-1", "pg-0", "aliveness-test"]
    by_limit = shape_listing({"sort": "arguments.x-max-length", "columns": "name"}, QUEUES)
    assert by_limit[0] == {"name": "pg-3"}  # type: ignore[index]


def test_pages_with_name_filter_as_rabbitmq() -> None:
    page = shape_listing({"page": "2", "page_size": "2", "name": "pg", "sort": "name", "sort_reverse": "true",
                          "columns": "name"}, QUEUES)
    assert page == {"filtered_count": 5, "item_count": 2, "items": [{"name": "pg-2"}, {"name": "pg-1"}],
                    "page": 2, "page_count": 3, "page_size": 2, "total_count": 6}
    regex = shape_listing({"page": "1", "page_size": "2", "name": "^pg-[12]$", "use_regex": "true",
                           "columns": "name"}, QUEUES)
    assert regex["items"] == [{"name": "pg-1"}, {"name": "pg-2"}] and regex["filtered_count"] == 2  # type: ignore[call-overload]
    assert shape_listing({"page": "1"}, [])["items"] == []  # type: ignore[call-overload]


@pytest.mark.parametrize(("query", "error", "reason"), [
    ({"page": "9", "page_size": "2"}, "page_out_of_range", "Page out of range, page: 9 page size: 2, len: 6"),
    ({"page": "1", "page_size": "0"}, "invalid_pagination_parameters",
     "Invalid pagination parameters: page number 1, page size 0"),
    ({"page": "x"}, "bad_request", "Pagination parameters are invalid"),
    ({"page": "1", "page_size": "501"}, "invalid_pagination_parameters",
     "Invalid pagination parameters: page number 1, page size 501"),
])
def test_bad_pages_are_400s(query: dict[str, str], error: str, reason: str) -> None:
    with pytest.raises(HTTPProblem) as problem:
        shape_listing(query, QUEUES)
    assert (problem.value.status, problem.value.error, problem.value.reason) == (400, error, reason)
