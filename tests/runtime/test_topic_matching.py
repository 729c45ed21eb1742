"""The MQTT client's filter matching agrees with paho's topic_matches_sub, which it replaces."""

from __future__ import annotations

import paho.mqtt.client as paho
from hypothesis import given
from hypothesis import strategies as st

from coordinator.runtime.mqtt import topic_matches

LEVEL = st.sampled_from(["qubit", "state", "ast_1", "", "$SYS", "x"])
FILTER_LEVEL = st.sampled_from(["qubit", "state", "ast_1", "", "$SYS", "+", "#"])


@given(st.lists(FILTER_LEVEL, min_size=1, max_size=5), st.lists(LEVEL, min_size=1, max_size=5))
def test_agrees_with_paho(filter_levels: list[str], topic_levels: list[str]) -> None:
    if "#" in filter_levels[:-1]:  # not a valid filter: '#' only last
        filter_levels = filter_levels[: filter_levels.index("#") + 1]
    topic_filter, topic = "/".join(filter_levels), "/".join(topic_levels)
    assert topic_matches(topic_filter, topic) == paho.topic_matches_sub(topic_filter, topic)


def test_the_rules() -> None:
    assert topic_matches("qubit/state/+", "qubit/state/ast_1")
    assert not topic_matches("qubit/state/+", "qubit/state/ast_1/x")
    assert topic_matches("qubit/events/#", "qubit/events")  # '#' takes the parent level too
    assert topic_matches("qubit/events/#", "qubit/events/COMMAND_COMPLETED/ast_1")
    assert not topic_matches("#", "$SYS/broker/uptime")
    assert topic_matches("$SYS/#", "$SYS/broker/uptime")
