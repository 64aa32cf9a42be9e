r"""A RandOpt member as a Hugging Face checkpoint (safetensors, config, generation config,
tokenizer) that `transformers.AutoModelForCausalLM.from_pretrained(OUT)` loads as it is.

  python -m experiments.export --run_dir /tmp/ro --member top1 --out /tmp/ro_top1
  python -m experiments.export --run_dir /tmp/ro --member 3 --dtype bfloat16 --out /tmp/ro_3

`--run_dir` is a finished `experiments.randopt` run (its `topk.json`); `--member` is `top1` or
a rank k of its saved top-K. The member is rebuilt from `(seed, sigma)` and the run's
`PerturbSpec` on the base weights the run used (`thickets_jax.llm.export`).
"""

from absl import flags

from thickets_jax import cli
from thickets_jax.errors import InputError
from thickets_jax.llm import export

flags.DEFINE_string("run_dir", None, "A finished randopt run (holding topk.json).")
flags.DEFINE_string("member", "top1", "top1, or a rank k of the saved top-K.")
flags.DEFINE_string("out", None, "A new directory for the checkpoint.")
flags.DEFINE_enum("dtype", "float32", list(export.DTYPES), "Dtype of the written weights.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.run_dir or not FLAGS.out:
    raise InputError("--run_dir and --out are required.")
  written = export.export_member(FLAGS.run_dir, FLAGS.out, FLAGS.member, FLAGS.dtype)
  print(f"wrote {FLAGS.out}: {written['model']} member rank {written['rank']} "
        f"(seed {written['seed']}, sigma {written['sigma']:g}), {written['dtype']}")


if __name__ == "__main__":
  cli.run(main)
