"""The topic root (QUBIT_TOPIC_ROOT): validated, read once per process, in every topic."""

import os
import subprocess
import sys

import pytest

from coordinator.contract import topics
from coordinator.runtime.settings import Settings, SettingsError


@pytest.mark.parametrize("root", ["qubit", "depot_north", "acme/depot_north", "a/b/c"])
def test_one_or_more_levels_are_a_root(root):
    assert topics.check_root(root) == root
    assert Settings.from_environ({"QUBIT_TOPIC_ROOT": root}).topic_root == root


@pytest.mark.parametrize("root", ["a/#", "+", "a//b", "/a", "a/", "$SYS", "a\x00b", "a/ b", "x" * 201])
def test_wildcards_empty_levels_and_reserved_roots_are_refused(root):
    with pytest.raises(ValueError):
        topics.check_root(root)
    with pytest.raises(SettingsError, match="QUBIT_TOPIC_ROOT="):
        Settings.from_environ({"QUBIT_TOPIC_ROOT": root})


def test_blank_is_the_default_root_and_values_are_trimmed():
    assert Settings.from_environ({"QUBIT_TOPIC_ROOT": " "}).topic_root == "qubit"
    assert Settings.from_environ({"QUBIT_TOPIC_ROOT": " depot_a "}).topic_root == "depot_a"


def test_under_moves_a_topic_to_another_root_and_refuses_a_foreign_one():
    assert topics.under("site_b", topics.event_topic("STATE_CHANGED", "ast_1")) == "site_b/events/STATE_CHANGED/ast_1"
    with pytest.raises(ValueError):
        topics.under("site_b", "elsewhere/events/#")
    assert topics.relative("elsewhere/status/g/a") is None


def _in_a_process(root: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=os.environ | {"QUBIT_TOPIC_ROOT": root},
                          capture_output=True, text=True, timeout=30)


def test_a_process_builds_every_topic_and_its_client_id_under_its_root():
    code = ("from coordinator.contract import topics as t\n"
            "from coordinator.runtime.refusals import topic_family\n"
            "print(t.EVENTS_ALL, t.commands_topic('g'), t.SCHEDULES_IN, t.client_id('planner'),"
            " t.json_topic(t.asset_state_topic('a')), topic_family(t.results_topic('g')),"
            " topic_family('qubit/results/g'))")
    run = _in_a_process("acme/north", code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["acme/north/events/#", "acme/north/commands/g", "acme/north/schedules/in",
                                  "qubit-acme.north-planner", "acme/north/json/state/a", "results", "other"]


def test_a_bad_root_stops_a_process_in_one_line():
    run = _in_a_process("a/#", "import coordinator.contract.topics")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and run.stderr.startswith("QUBIT_TOPIC_ROOT='a/#'")
