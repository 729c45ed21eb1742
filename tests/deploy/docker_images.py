"""What the compose check needs from the machine: a Docker engine, and images built without a
registry (none answers here) and without PyPI inside a container (only the host reaches it).

- the base image: ``debootstrap --variant=minbase bookworm`` with python3 and its venv,
  ``docker import``-ed, tagged by a hash of the debootstrap command (built once per machine:
  the engine's data root keeps it);
- the wheelhouse image: the base plus ``/wheels``, every dependency of pyproject.toml as wheels
  (``pip wheel`` on the host), tagged by a hash of the dependency list and the base;
- the project's images: ``docker-compose build`` with those two as build args; Docker's layer
  cache makes an unchanged tree cost seconds.

No engine: the check skips with what is missing, unless QUBIT_REQUIRE_DOCKER=1 (CI: .ci/run
starts the engine), where it fails instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REPOSITORY = "qubit-check-base"
WHEELS_REPOSITORY = "qubit-check-wheels"


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """A command, its output captured; on failure the assertion shows its tail."""
    done = subprocess.run(args, env=env, capture_output=True, text=input is None, timeout=timeout, input=input)
    if check and done.returncode != 0:
        out = done.stdout if isinstance(done.stdout, str) else done.stdout.decode(errors="replace")
        err = done.stderr if isinstance(done.stderr, str) else done.stderr.decode(errors="replace")
        raise AssertionError(f"{' '.join(args[:4])} ... exited {done.returncode}:\n{out[-3000:]}\n{err[-3000:]}")
    return done


def _unavailable(reason: str) -> None:
    if os.environ.get("QUBIT_REQUIRE_DOCKER") == "1":
        pytest.fail(f"QUBIT_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class Engine:
    env: dict[str, str]

    def image_exists(self, tag: str) -> bool:
        return run("docker", "image", "inspect", tag, env=self.env, check=False).returncode == 0


def find_engine() -> Engine:
    """A Docker engine that answers, and docker-compose (1.29 reads compose.yaml)."""
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            _unavailable(f"no `{tool}` on PATH (apt-get install docker.io docker-compose; .ci/run starts an engine)")
    env = dict(os.environ)
    info = run("docker", "info", "--format", "{{.ServerVersion}}", env=env, check=False, timeout=30)
    if info.returncode != 0:
        where = env.get("DOCKER_HOST", "the default socket")
        _unavailable(f"no Docker engine answers at {where} (.ci/run starts one: see docs/deploy.md)")
    return Engine(env)


def base_image(engine: Engine) -> str:
    """Debian with python3 and venv, from debootstrap: no registry needed (cached by its recipe)."""
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE]
    tag = f"{BASE_REPOSITORY}:{SUITE}-{_short_hash(*command)}"
    if engine.image_exists(tag):
        return tag
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        _unavailable("the base image is not built yet and building it needs root and debootstrap "
                     "(apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="qubit-base-") as root:
        run(*command, root, timeout=900)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, env=engine.env,
                                  capture_output=True, text=True, timeout=300)
        assert tar.stdout is not None
        tar.stdout.close()
        assert tar.wait() == 0 and imported.returncode == 0, imported.stderr
    return tag


def _requirements() -> list[str]:
    """What the image installs: the project's dependencies and its build backend."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return sorted([*project["project"]["dependencies"], *project["build-system"]["requires"]])


def wheelhouse_image(engine: Engine, base: str) -> str:
    """The base plus /wheels: every requirement as a wheel for the base's Python, built on the host."""
    requirements = _requirements()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    tag = f"{WHEELS_REPOSITORY}:{_short_hash(base, python, *requirements)}"
    if engine.image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="qubit-wheels-") as context:
        wheels = Path(context) / "wheels"
        run(sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), *requirements, timeout=900)
        (Path(context) / "Dockerfile").write_text(f"FROM {base}\nCOPY wheels /wheels\n")
        run("docker", "build", "-q", "-t", tag, context, env=engine.env, timeout=300)
    return tag


@dataclass(frozen=True)
class Images:
    base: str
    wheelhouse: str

    def build_env(self) -> dict[str, str]:
        """compose.yaml's build arguments for an offline build."""
        return {"QUBIT_BASE_IMAGE": self.base, "QUBIT_WHEELHOUSE_IMAGE": self.wheelhouse,
                "QUBIT_BROKER_BASE_IMAGE": self.base}


def build_images(engine: Engine) -> Images:
    base = base_image(engine)
    return Images(base, wheelhouse_image(engine, base))
