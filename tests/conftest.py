"""Shared test setup: every test runs on a fake 8-device CPU mesh.

XLA reads XLA_FLAGS once, when the CPU backend starts, so the flag is set here, before any
test module imports jax.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 8, f"expected the fake 8-device CPU mesh, got {devs}"
    return devs
