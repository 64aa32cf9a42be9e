"""Two host CPU devices, so sharding over a `population` mesh is tested on any machine."""

import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")


def pytest_collection_modifyitems(items):
  """Tests marked `two_devices` are skipped on a single accelerator (e.g. one GPU); on CPU they
  always run (a host that did not split fails them loudly)."""
  import jax  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS)
  if jax.default_backend() == "cpu" or jax.device_count() >= 2:
    return
  skip = pytest.mark.skip(reason="needs 2 devices")
  for item in items:
    if "two_devices" in item.keywords:
      item.add_marker(skip)
