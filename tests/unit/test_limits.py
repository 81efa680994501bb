import pytest

from warren.limits import DEFAULT_LIMITS, Limits


def test_defaults_are_valid_and_match_rabbitmq() -> None:
    DEFAULT_LIMITS.validate()
    assert DEFAULT_LIMITS.channel_max == 2047
    assert DEFAULT_LIMITS.max_message_size == 128 * 1024 * 1024


def test_override_rejects_unknown_and_out_of_range_settings() -> None:
    with pytest.raises(ValueError, match="unknown limit"):
        Limits().with_overrides(frame_maxx=1)
    with pytest.raises(ValueError, match="frame_max"):
        Limits().with_overrides(frame_max=100)
    assert Limits().with_overrides(frame_max=0).frame_max == 0
