"""Message rates, queue depth rates and the request limiter: pure, time passed in."""

from __future__ import annotations

from warren.api.rates import DepthRates, RateTracker, RequestLimiter


def test_message_stats_are_counters_with_their_rate_over_the_window() -> None:
    tracker = RateTracker(window=5.0)
    assert tracker.message_stats()["publish_details"] == {"rate": 0.0}
    for second in range(11):
        tracker.sample(float(second), {"publish": 100 * second, "ack": 10 * second})
    stats = tracker.message_stats()
    assert stats["publish"] == 1000 and stats["publish_details"] == {"rate": 100.0}
    assert stats["ack_details"] == {"rate": 10.0}
    assert stats["redeliver"] == 0 and stats["redeliver_details"] == {"rate": 0.0}


def test_depth_rates_follow_a_growing_then_draining_queue() -> None:
    depths = DepthRates(window=5.0)
    q = ("/", "jobs")
    assert depths.details(*q)["messages_details"] == {"rate": 0.0}
    for second in range(4):  # grows by 20 a second, 15 ready and 5 unacknowledged
        depths.sample(float(second), {q: (20 * second, 15 * second, 5 * second)})
    assert depths.details(*q) == {"messages_details": {"rate": 20.0}, "messages_ready_details": {"rate": 15.0},
                                  "messages_unacknowledged_details": {"rate": 5.0}}
    for second in range(4, 30):  # then stays at 60 ...
        depths.sample(float(second), {q: (60, 45, 15)})
    assert depths.details(*q)["messages_details"] == {"rate": 0.0}
    for second in range(30, 45):  # ... and drains by 4 a second
        depths.sample(float(second), {q: (60 - 4 * (second - 29), 0, 0)})
    assert depths.details(*q)["messages_details"] == {"rate": -4.0}


def test_depth_rates_of_new_and_unknown_queues() -> None:
    depths = DepthRates(window=5.0)
    depths.sample(0.0, {("/", "old"): (1, 1, 0)})
    depths.sample(2.0, {("/", "old"): (2, 2, 0), ("/", "new"): (50, 50, 0)})
    # created since the baseline, empty: it grew by 50 in the last two seconds
    assert depths.details("/", "new")["messages_details"] == {"rate": 25.0}
    assert depths.details("/", "absent")["messages_ready_details"] == {"rate": 0.0}
    assert depths.details("/", "old")["messages_details"] == {"rate": 0.5}


def test_request_limiter_allows_a_burst_then_paces_each_client() -> None:
    limiter = RequestLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("a", 0.0) == 0.5  # wait half a second for the next token
    assert limiter.allow("b", 0.0) == 0.0  # another client has its own bucket
    assert limiter.allow("a", 0.5) == 0.0


def test_totals_sum_the_queues_of_all_or_one_vhost() -> None:
    depths = DepthRates(window=5.0)
    depths.sample(0.0, {("/", "a"): (0, 0, 0), ("/", "b"): (10, 10, 0), ("v", "c"): (5, 5, 0)})
    depths.sample(2.0, {("/", "a"): (4, 2, 2), ("/", "b"): (6, 6, 0), ("v", "c"): (9, 9, 0), ("v", "new"): (2, 2, 0)})
    assert depths.totals_details() == {"messages_details": {"rate": 3.0}, "messages_ready_details": {"rate": 2.0},
                                       "messages_unacknowledged_details": {"rate": 1.0}}
    assert depths.totals_details("v")["messages_details"] == {"rate": 3.0}
    assert depths.totals_details("/")["messages_details"] == {"rate": 0.0}
    assert DepthRates().totals_details()["messages_details"] == {"rate": 0.0}
