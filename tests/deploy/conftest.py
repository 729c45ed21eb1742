"""Fixtures of the compose check: the engine and the offline-built images (docker_images.py)."""

from __future__ import annotations

import pytest

from tests.deploy.docker_images import Engine, Images, build_images, find_engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    """A Docker engine that answers; skip (or fail, QUBIT_REQUIRE_DOCKER=1) without one."""
    return find_engine()


@pytest.fixture(scope="session")
def images(engine: Engine) -> Images:
    """The base and wheelhouse images, built once per machine (tagged by their inputs)."""
    return build_images(engine)
