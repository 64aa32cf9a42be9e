r"""Benchmarks of docs/benchmarks.md, each printing `<id>: <figure> (<comparison>)` last.

  python -m experiments.benchmark --bench B1   # 1D RandOpt post-training vs measured peak
  python -m experiments.benchmark --bench B2   # 1D approximation experiment end to end
  python -m experiments.benchmark --bench B3   # SmolLM2 population generation vs HF generate
  python -m experiments.benchmark --bench B4   # peak RSS of population scoring at two N
  python -m experiments.benchmark --bench B5   # GPU/TPU: qwen2.5-7b shapes vs the roofline
  python -m experiments.benchmark --bench ES   # peak RSS and time of one ES update at two N
  python -m experiments.benchmark --bench B6   # low-rank members factored vs full rank, SmolLM2
  python -m experiments.benchmark --bench B7   # successive halving vs full scoring, same run
  python -m experiments.benchmark --bench B8   # shared-prefix prefill vs prefix in every prompt
  python -m experiments.benchmark --bench B9   # slot refill vs batch decoding vs HF generate
  python -m experiments.benchmark --bench P1 --host_devices 8   # dry-run plans vs their floor
  python -m experiments.benchmark --bench P1   # GPU/TPU: measured peak memory vs the plan

Each benchmark is a module of `thickets_jax.benchmarks` (its config's settings are the flags
below; a flag of another benchmark is refused). Figures are ratios measured in one process
(B1, B3: against the machine's fp32 matmul peak, measured before and after the workload; B3
also against transformers `generate` on the same members and prompts; B5: against the
accelerator's measured bf16 matmul rate and copy bandwidth) or against a recorded peer time
(B2). B4 and ES run one child process per N. B6 runs low-rank members factored against
full-rank members materialised, B8 the prefill with and without the shared prefix, each in one
process. B7 runs full scoring and successive halving on the same members: 1D over seeds, and an
offline LLM. P1 compares the execution plan's memory floor with the compiled program (CPU: for
the host's simulated devices, corrected for the CPU backend's bf16-upcast buffers)
or with the peak a short run measures (accelerators).
"""

from absl import flags

from experiments import common
from thickets_jax import benchmarks, cli, configs
from thickets_jax.errors import InputError

flags.DEFINE_string("bench", "B1", "One of " + ", ".join(
    f"{b.name} ({b.summary})" for b in map(benchmarks.BENCHMARKS.get, benchmarks.BENCHMARKS))
                    + ".")
for _name in benchmarks.BENCHMARKS:
  configs.define_flags(benchmarks.BENCHMARKS.get(_name).config, shared=True)
FLAGS = flags.FLAGS


def config_from_flags(name: str):
  """Benchmark `name`'s config from its flags; a flag given that it does not read is refused."""
  config_class = benchmarks.BENCHMARKS.get(name).config
  own = {f.name for f in configs.settings(config_class)}
  for other in benchmarks.BENCHMARKS:
    foreign = [f for f in configs.present(benchmarks.BENCHMARKS.get(other).config)
               if f not in own]
    if foreign:
      users = [b for b in benchmarks.BENCHMARKS if foreign[0] in
               {f.name for f in configs.settings(benchmarks.BENCHMARKS.get(b).config)}]
      raise InputError(f"--{foreign[0]} is a setting of {', '.join(users)}, not of {name}.")
  return configs.from_flags(config_class, base=config_class())


def main(argv):
  del argv
  benchmark = benchmarks.BENCHMARKS.get(FLAGS.bench)
  config = config_from_flags(benchmark.name)  # checked before any measurement
  common.setup_devices()
  print(benchmark.run(config), flush=True)


if __name__ == "__main__":
  cli.run(main)
