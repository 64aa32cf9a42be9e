"""FLOP accounting against hand-computed small cases and the paper's closed forms."""

import pytest

from thickets_jax import flops

import toys

CONFIG = toys.TINY_CONFIG  # 2 layers, 4 heads of 8
P = CONFIG.num_params
ATTENTION = 4 * 2 * 4 * 8  # FLOPs per (token, visible key) pair


def test_sequence_flops_by_hand():
  # One row of 3 tokens: 3 tokens x 2P, and causal attention over 1 + 2 + 3 keys.
  assert flops.sequence_flops(CONFIG, [3]) == 3 * 2 * P + ATTENTION * 6
  assert flops.sequence_flops(CONFIG, [3, 1]) == 4 * 2 * P + ATTENTION * 7


def _no_attention(config):
  return config.replace(num_heads=0)  # the paper's closed forms count 2·P per token only


@pytest.mark.parametrize("N, D, L, T", [(30, 200, 100, 1), (8, 32, 48, 4)])
def test_randopt_and_es_reduce_to_the_paper_closed_form(N, D, L, T):
  config = _no_attention(CONFIG)
  scoring = T * N * flops.sequence_flops(config, [L] * D)
  assert scoring == flops.paper_randopt_or_es(T, N, D, config.num_params, L)
  es_total = scoring + T * flops.es_update_flops(config.num_params, N)
  assert es_total - scoring == 2 * T * N * config.num_params


@pytest.mark.parametrize("B, G, L, T", [(1024, 8, 100, 1), (8, 4, 60, 3)])
def test_grpo_reduces_to_the_paper_closed_form(B, G, L, T):
  config = _no_attention(CONFIG)
  step = flops.grpo_step_flops(config, [L] * (B * G), old_logprob_pass=False,
                               reference_pass=False)
  assert T * step["total"] == flops.paper_grpo(T, B, G, config.num_params, L)
  with_all = flops.grpo_step_flops(config, [L] * (B * G), old_logprob_pass=True,
                                   reference_pass=True)
  assert with_all["total"] == pytest.approx(step["total"] * 12 / 8)  # + old-policy, reference
  assert flops.paper_ppo(T, B, G, 7, L) / flops.paper_grpo(T, B, G, 7, L) == 14 / 8


def test_mlp_flops():
  assert flops.mlp_flops(100, 7) == 1400 and flops.mlp_flops(100, 7, backward=True) == 4200
