"""The README's library snippet runs as written and does what it says."""

import os
import re

import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks() -> list[str]:
  with open(os.path.join(ROOT, "README.md")) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), re.DOTALL)


def test_the_toy_randopt_snippet_runs_and_finds_better_members(capsys):
  snippet = next(b for b in _python_blocks() if "randopt.search" in b)
  namespace = {}
  exec(compile(snippet, "README.md", "exec"), namespace)  # our own documentation, not model text
  result, score, params = namespace["result"], namespace["score"], namespace["params"]
  assert len(result.top) == 8 and namespace["ensemble"].shape == (64, 1)
  assert result.top_scores[0] > float(score(params))  # the thicket: better members nearby
  np.testing.assert_array_equal(result.top_scores, np.sort(result.scores)[::-1][:8])
  x = namespace["x"]
  ensemble_score = -float(jnp.mean((namespace["ensemble"] - (0.8 * x + 0.1)) ** 2))
  assert ensemble_score > float(score(params))
  assert "best member" in capsys.readouterr().out
