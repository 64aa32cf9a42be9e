"""Two host CPU devices, so sharding over a `population` mesh is tested on any machine."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
