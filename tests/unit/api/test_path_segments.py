"""Path segments must be Unicode: what unquote can and cannot produce."""

from __future__ import annotations

import pytest

from warren.api.http import HTTPProblem, check_path_segments, split_raw_path


@pytest.mark.parametrize("escape", ["%ED%A0%80", "%FF", "%C3", "%80%80"])
def test_a_percent_escape_that_is_not_utf8_becomes_a_replacement_character(escape: str) -> None:
    [segment] = split_raw_path("/" + escape)
    assert "\ufffd" in segment
    check_path_segments([segment])  # a valid name: accepted


def test_a_raw_byte_passed_through_as_a_surrogate_is_refused() -> None:
    segments = split_raw_path("/api/queues/%2F/a\udcffb")  # aiohttp's pure-Python parser, raw b"\xff"
    with pytest.raises(HTTPProblem) as refused:
        check_path_segments(segments)
    assert refused.value.status == 400 and "UTF-8" in refused.value.reason
