"""thickets_jax: RandOpt, solution density and spectral discordance around pretrained weights.

Importing the package turns on `jax_threefry_partitionable`: the value of every perturbation
depends on it, so it is fixed here once rather than left to each entry point. With it on, a
sharded leaf draws its noise shard-locally and members are bit-identical however they are sharded.
It also lowers large threefry draws unrolled on the CPU backend (`cpu_threefry`: the same bits,
3.7x faster to draw).
"""

import jax

from thickets_jax import cpu_threefry

jax.config.update("jax_threefry_partitionable", True)
cpu_threefry.register()
