"""Imports point down: every library module imports only modules of its own layer or below
(docs/architecture.md draws the same table)."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "thickets_jax")

# Bottom to top; a module's layer is that of its longest listed prefix.
LAYERS = (
    ("foundation", ("errors", "rng", "cpu_threefry", "tree", "registry", "distributed",
                    "checkpoint", "metrics", "cli", "configs", "scales")),
    ("members and storage", ("perturb", "population", "storage", "workdir", "plotting", "flops",
                             "bench")),
    ("search methods", ("search", "randopt", "halving", "landscape")),
    ("tasks", ("tasks",)),
    ("language models", ("llm.config", "llm.rope", "llm.architectures", "llm.kv_cache",
                         "llm.factored", "llm.modules", "llm.model", "llm.assets",
                         "llm.gguf_file", "llm.weights", "llm.tokenizer", "llm.codec", "llm.registry", "llm.sharding", "llm.chunk",
                         "llm.generate", "llm.refill", "llm.generator", "llm.plan",
                         "llm.teacher_forcing", "llm.scoring", "llm.torch_twin", "llm.roofline",
                         "llm.adapter")),
    ("training baselines", ("baselines", "llm.sft")),
    ("experiments", ("llm.session", "llm.randopt", "llm.density", "llm.discordance",
                     "llm.compare", "llm.distill", "llm.landscape", "llm.predict", "llm.export",
                     "llm.dryrun", "signals", "presets", "benchmarks")),
)


def _module_name(path: str) -> str:
  relative = os.path.relpath(path, os.path.dirname(ROOT))[:-len(".py")].replace(os.sep, ".")
  return relative[:-len(".__init__")] if relative.endswith(".__init__") else relative


def _is_module(name: str) -> bool:
  base = os.path.join(os.path.dirname(ROOT), *name.split("."))
  return os.path.isfile(base + ".py") or os.path.isdir(base)


def _layer(module: str) -> int:
  short = module[len("thickets_jax."):]
  matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS)
             for prefix in prefixes if short == prefix or short.startswith(prefix + ".")]
  assert matches, f"{module} is in no layer of LAYERS; add it where it belongs"
  return max(matches)[1]


def _imports(path: str) -> set[str]:
  """The thickets_jax modules `path` imports (at any depth of its code)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("thickets_jax."))
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("thickets_jax"):
      for alias in node.names:
        name = f"{node.module}.{alias.name}"
        found.add(name if _is_module(name) else node.module)
  return {name for name in found if name != "thickets_jax" and name.count(".") >= 1}


MODULES = sorted(os.path.join(directory, f) for directory, _, files in os.walk(ROOT)
                 for f in files if f.endswith(".py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_a_higher_layer(path):
  module = _module_name(path)
  if module in ("thickets_jax", "thickets_jax.llm", "thickets_jax.baselines"):
    return  # empty packages
  upward = sorted(name for name in _imports(path) if _layer(name) > _layer(module))
  assert not upward, (f"{module} ({LAYERS[_layer(module)][0]}) imports "
                      + ", ".join(f"{n} ({LAYERS[_layer(n)][0]})" for n in upward))
