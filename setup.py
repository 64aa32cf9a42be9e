"""thickets_jax: RandOpt, solution density and spectral discordance in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="thickets_jax",
    version="0.1.0",
    description="Neural Thickets in JAX: RandOpt, solution density, spectral discordance.",
    packages=find_packages(include=["thickets_jax", "thickets_jax.*", "experiments"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12,<0.13",
        "chex>=0.1.92",
        "absl-py>=2.1",
        "numpy>=2.0",
        "scipy>=1.13",
        "matplotlib>=3.9",
        "safetensors>=0.4",
        "gguf>=0.17",
        "transformers>=5.0,<6",  # tokenizers, chat templates, GGUF tokenizer conversion
        "huggingface_hub>=1.0",
        "datasets>=3.0",
        "math-verify>=0.7",     # MATH answer equivalence
        "reasoning-gym>=0.1.19",  # offline procedural reasoning tasks
    ],
    extras_require={
        # torch only for parity tests and peer benchmarks; pinned so pip takes the CPU build.
        # pytest < 9: pytest 9 derives a node id that pytest-xdist 3.8 cannot suffix, so
        # `--dist loadgroup` (launch/local.sh) silently stops grouping.
        "test": ["pytest>=8,<9", "pytest-xdist>=3.6", "hypothesis>=6.100", "torch==2.13.0",
                 "accelerate>=1.0", "peft>=0.17"],
    },
)
