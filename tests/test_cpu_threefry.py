"""The CPU lowering of threefry by draw size: both forms are Threefry-2x32-20, so a member's
noise has the same bits whichever form a draw's size picks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import cpu_threefry, perturb as P

# Random123's known answers for Threefry-2x32 with 20 rounds: (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("form", [cpu_threefry.unrolled, cpu_threefry.rolled])
def test_both_forms_give_the_known_answers(form):
  for key, counter, expected in KNOWN_ANSWERS:
    args = [jnp.asarray(v, jnp.uint32) for v in (*key, *counter)]
    assert [int(v) for v in jax.jit(form)(*args)] == list(expected)


def test_a_draw_has_the_same_bits_below_and_above_the_threshold(monkeypatch):
  """The same draws (a tiny model's members, one plain normal) lowered rolled, then unrolled."""
  params = {"layers": {"w": jnp.ones((3, 8, 16))}, "embed": jnp.ones((32, 8)),
            "norm": jnp.ones((8,))}
  spec = P.PerturbSpec(stacked=r"^layers/")

  def draws():
    member = jax.jit(lambda p: P.perturb_member(p, 7, 0.1, spec))(params)
    normal = jax.jit(lambda k: jax.random.normal(k, (5, 300)))(jax.random.key(3))
    return [np.asarray(x) for x in (*jax.tree.leaves(member), normal)]
  monkeypatch.setattr(cpu_threefry, "UNROLL_FROM", 1 << 62)
  rolled = draws()
  monkeypatch.setattr(cpu_threefry, "UNROLL_FROM", 0)
  unrolled = draws()
  for a, b in zip(rolled, unrolled):
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_the_package_lowers_large_cpu_draws_unrolled():
  """Above the threshold the program holds the 20 rounds inline, below it one loop."""
  def text(size):
    return jax.jit(lambda k: jax.random.bits(k, (size,))).lower(jax.random.key(0)).as_text()
  assert "while" not in text(cpu_threefry.UNROLL_FROM)
  assert "while" in text(16)
