"""thickets_jax: RandOpt, solution density and spectral discordance around pretrained weights.

Importing the package turns on `jax_threefry_partitionable`: the value of every perturbation
depends on it, so it is fixed here once rather than left to each entry point. With it on, a
sharded leaf draws its noise shard-locally and members are bit-identical however they are sharded.
"""

import jax

jax.config.update("jax_threefry_partitionable", True)
