r"""A RandOpt member as a Hugging Face checkpoint (safetensors, config, generation config,
tokenizer) that `transformers.AutoModelForCausalLM.from_pretrained(OUT)` loads as it is.

  python -m experiments.export --run_dir /tmp/ro --member top1 --out /tmp/ro_top1
  python -m experiments.export --run_dir /tmp/ro --member 3 --dtype bfloat16 --out /tmp/ro_3
  python -m experiments.export --run_dir /tmp/ro --member mean --out /tmp/ro_mean

`--run_dir` is a finished `experiments.randopt` run (its `topk.json`); `--member` is `top1` or
a rank k of its saved top-K, or `mean` / `mean:k`: one model θ + the mean of the top K's
(k's) displacements σ·ε, the averaged-weights model. The member is rebuilt from
`(seed, sigma)` and the run's `PerturbSpec` on the base weights the run used
(`thickets_jax.llm.export`).
"""

from thickets_jax import cli, configs
from thickets_jax.llm import export

configs.define_flags(export.ExportConfig)


def main(argv):
  del argv
  config = configs.from_flags(export.ExportConfig)
  written = export.export_member(config)
  members = ", ".join(f"seed {m['seed']} sigma {m['sigma']:g}" for m in written["members"][:4])
  more = f" and {len(written['members']) - 4} more" if len(written["members"]) > 4 else ""
  print(f"wrote {config.out}: {written['model']} {written['member']} ({members}{more}), "
        f"{written['dtype']}")


if __name__ == "__main__":
  cli.run(main)
