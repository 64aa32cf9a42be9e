r"""Solution density δ(m) around pretrained weights, per model and sigma (the paper's Figure 3a).

  python -m experiments.density --workdir /tmp/density          # the offline main job
  python -m experiments.density --model qwen2.5-1.5b-instruct,qwen2.5-7b-instruct --task gsm8k \
      --N 1000 --sigmas 5e-4,1e-3,2e-3 --train_size 200 --max_new_tokens 512 \
      --workdir /runs/density

With no flags it runs the offline default of `thickets_jax.llm.density.DensityConfig`: both
offline models (GGUF-dequantised SmolLM2-135M and Qwen2.5-Coder-0.5B) on `arithmetic`, where
both bases sit between 0 and 1. Each perturbation is scored on the first `train_size`
examples; δ(m) = fraction whose score ≥ base + m (absolute margins), with Wilson 95%
intervals, next to the fractions strictly above and tied with the base. Writes
`results.json`, `density_vs_size.png`, `scores_<model>.png`, resumable `runs/<model>/`.
"""

from absl import flags

from experiments import llm_common
from thickets_jax import cli, configs
from thickets_jax.llm import density

flags.adopt_module_key_flags(llm_common)
configs.define_flags(density.DensityConfig)
FLAGS = llm_common.FLAGS


def main(argv):
  del argv
  llm_common.setup_devices()
  config = llm_common.config(density.DensityConfig)
  result = llm_common.run_or_plan(density.run_density, config, FLAGS.workdir)
  if result is not None:
    print(_table(result))


def _table(result) -> str:
  lines = [f"{'model':30s} {'params':>11s} {'base':>6s} {'above':>6s} {'tied':>6s}  "
           f"δ(m) per sigma (reward)"]
  for p in result["points"]:
    by_sigma = {}
    for r in p["density_reward"]:
      by_sigma.setdefault(r["sigma"], []).append(f"{r['margin']:g}:{r['density']:.2f}")
    densities = "; ".join(f"σ={s:g} " + " ".join(v) for s, v in by_sigma.items())
    versus = p["versus_base_reward"]
    note = f"  [base at the {versus['base_at']}]" if versus["base_at"] else ""
    lines.append(f"{p['model']:30s} {p['params']:11d} {p['base_reward']:6.3f} "
                 f"{versus['above']['fraction']:6.2f} {versus['tied']['fraction']:6.2f}  "
                 f"{densities}{note}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main)
