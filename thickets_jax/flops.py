"""Training and test-time FLOPs of RandOpt, ES and GRPO, counted from the tokens processed.

Convention (the paper's, made exact): a forward pass costs 2·P FLOPs per token (P the model's
published parameter count, tied embeddings once) plus causal attention, 4·heads·head_dim FLOPs
per layer and (token, visible key) pair (a sliding-window layer sees at most its window); a backward pass costs two forwards. Tokens are the real
ones of each row, prompt plus generated (up to and including the stop token), never the
max-token limit or padding. What each method costs:

  RandOpt selection   Σ over members and train prompts of one forward        (2·N·D·P·L)
  ES, per iteration   the same for its N members, + 2·N·P for the update     (2·N·D·P·L)
  GRPO, per step      rollouts (1×) + training forward and backward (3×)     (8·B·G·P·L)
                      + the old-policy log-prob pass (1×) when the step has several mini-
                      batches, + the reference pass (1×) when the KL term is on
  a K ensemble        K forwards per test prompt (members or samples)

The closed forms in brackets are the paper's (uniform length L, no attention term); tests check
that the counts reduce to them.
"""

from typing import Sequence

import numpy as np



def token_flops(num_params: int) -> float:
  """One token through a model of `num_params` parameters: 2·P (attention scores aside)."""
  return 2.0 * num_params


def visible_pairs(t: np.ndarray, window: int) -> np.ndarray:
  """(query, key) pairs of a causal pass over t tokens when each query sees its last `window`
  positions (itself included): Σ_i min(i, window)."""
  seen = np.minimum(t, window)
  return seen * (seen + 1) / 2 + (t - seen) * window


def sequence_flops(config, lengths: Sequence[int]) -> float:
  """One causal forward over rows of `lengths` real tokens each: Σ 2·P·t + attention, each
  layer over the keys its window lets it see. `config`: a language model's shapes
  (`llm.config.ModelConfig`; only its counts are read, so this module stays below `llm`)."""
  t = np.asarray(lengths, np.float64)
  per_pair = 4.0 * config.num_heads * config.head_dim
  attention = sum(per_pair * visible_pairs(t, w) for w in config.layer_windows)
  return float(np.sum(token_flops(config.num_params) * t + attention))


def es_update_flops(num_params: int, population: int) -> float:
  """Adding N weighted member directions to the update: a multiply-add per parameter each."""
  return 2.0 * population * num_params


def grpo_step_flops(config, lengths: Sequence[int], *, old_logprob_pass: bool,
                    reference_pass: bool) -> dict:
  """FLOPs of one GRPO step over its B·G rollouts of `lengths` tokens, by part and in total."""
  forward = sequence_flops(config, lengths)
  parts = {"rollout": forward, "train": 3.0 * forward,
           "old_logprob": forward if old_logprob_pass else 0.0,
           "reference": forward if reference_pass else 0.0}
  return {**parts, "total": sum(parts.values())}


def mlp_flops(num_params: int, evaluations: int, *, backward: bool = False) -> float:
  """An MLP (no attention) applied `evaluations` times: 2·P each, 6·P with a backward pass."""
  return (6.0 if backward else 2.0) * num_params * evaluations


# The paper's closed forms: T iterations/steps, P parameters, L tokens per sequence.
def paper_randopt_or_es(T: int, N: int, D: int, P: int, L: int) -> float:
  return 2.0 * T * N * D * P * L


def paper_grpo(T: int, B: int, G: int, P: int, L: int) -> float:
  return 8.0 * T * B * G * P * L


def paper_ppo(T: int, B: int, G: int, P: int, L: int) -> float:
  return 14.0 * T * B * G * P * L
