"""One decoder-only transformer, in Flax linen, for every architecture `llm.architectures` loads.

GQA attention with RoPE (`rope`: rotate-half as Hugging Face, with its scalings), RMSNorm, gated
MLP, tied or untied embeddings, and the block options of `ModelConfig`: q/k biases or norms, norm
placement, Gemma's (1 + w) norms and scales, and sliding-window layers with their own RoPE base
(masked by RoPE position, so a shared prefix or left padding never widens a window). Layer
parameters are stacked `[layers, ...]` under `layers/` (`STACKED_LEAVES`, the pattern a
`PerturbSpec` needs to give every layer its own noise); the layers run in a scan or unrolled
through the same layer step.

The KV cache (`llm.kv_cache`) is passed in and returned (no mutable collections). Inside the
layer scan the cache is read-only: a call's `T` new tokens attend to the valid cached slots
(`cache_positions`) and causally to each other, the scan returns only their keys/values, and one
update writes them at slot `write_index` afterwards.
(Carrying or re-emitting the whole cache through the scan makes XLA rewrite all of it for
every layer of every decode step.) A prefix every row starts with (a shared system prompt or
few-shot block) can be kept outside the cache, once per member instead of once per row
(`prefix`).

Factored members: applied with a `members` variable collection (`llm.factored`, from
`perturb.member_factors` of M low-rank members), the rows are M member-major groups
`[M * b, ...]` and every weight acts as W + σε of its row's member without being materialised:
`x W` is one matmul shared by all M × b rows, plus each member's rank-r term `(x a) bᵀ`; vector
leaves (norm scales, biases) add their member's dense displacement.

Vector leaves (norm scales, biases: one value per feature) are float32 whatever the model's
dtype (`param_dtype`), and they act in float32 before the activation is rounded to the model's
dtype: in bfloat16, σε on a scale near 1 rounds back to the base value for every σ below
2^-9 ≈ 2e-3, so bf16-stored norms would silently keep no noise.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from thickets_jax.llm import rope
from thickets_jax.llm.config import ModelConfig
from thickets_jax.llm.factored import MEMBERS, member_count, rows_of
from thickets_jax.llm.kv_cache import init_cache, write_slots
from thickets_jax.llm.modules import Dense, Embed, RMSNorm, matmul_precision, norm, param_dtype
from thickets_jax.tree import path_name
STACKED_LEAVES = r"^layers/"  # leaves whose leading axis stacks the layers
_MASKED = -1e30


def _rope(config: ModelConfig, layer) -> tuple[jax.Array, Any]:
  """(inverse frequencies, attention factor) of `layer` (an int, or traced inside the layer
  scan): sliding-window layers use the local RoPE base and scaling."""
  c = config
  inv_freq, factor = rope.frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
  if not c.has_sliding_layers:
    return inv_freq, factor
  local_freq, local_factor = rope.frequencies(c.head_dim, c.local_rope_theta, c.local_rope_scaling)
  sliding = jnp.asarray([t == "sliding" for t in c.layer_types])[layer]
  if local_factor != factor:
    factor = jnp.where(sliding, local_factor, factor)
  return jnp.where(sliding, local_freq, inv_freq), factor


def _within_window(config: ModelConfig, layer, query_positions, key_positions):
  """[b, keys, queries] bool: each key no further back than `layer`'s window from each query
  (all True for models without sliding-window layers). positions: [b, t] and [b, keys]."""
  window = jnp.asarray(config.layer_windows, jnp.int32)[layer]
  return query_positions[:, None, :] - key_positions[:, :, None] < window


def _rows_to_groups(a: jax.Array, groups: int) -> jax.Array:
  """[b, kv, keys, q] -> [g, kv, keys, (b / g) * q]: each group's rows side by side on the last
  axis, for one matmul per group."""
  b, kv, keys, q = a.shape
  a = a.reshape(groups, b // groups, kv, keys, q).transpose(0, 2, 3, 1, 4)
  return a.reshape(groups, kv, keys, -1)


def _groups_to_rows(a: jax.Array, rows: int) -> jax.Array:
  """The inverse of `_rows_to_groups`: [g, kv, keys, (b / g) * q] -> [b, kv, keys, q]."""
  groups, kv, keys, _ = a.shape
  a = a.reshape(groups, kv, keys, rows // groups, -1).transpose(0, 3, 1, 2, 4)
  return a.reshape(rows, kv, keys, -1)


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, layer_k, layer_v, cache_positions, token_mask, layer,
               prefix=None):
    """Self-attention over a shared prefix, cached slots and the new tokens.

    Args:
      x: [b, t, d] new tokens. positions: [b, t].
      layer_k, layer_v: [b, kv, S, hd] this layer's cache (read only).
      cache_positions: [b, s] int32 RoPE positions of the first s ≤ S slots of the cache, -1
        on slots not to attend to (the later slots are not read), or None when the cache holds
        nothing yet (prefill: the cached slots are skipped, not masked).
      token_mask: [b, t] real new tokens.
      layer: this layer's index (sliding window and RoPE base).
      prefix: None, or this layer's (k, v) of a prefix every row starts with, each
        [g, kv, P, hd] at RoPE positions [0, P): the b rows are g member-major groups of b / g,
        and each group attends to its own prefix. Its scores and values are one matmul per
        group (the group's rows side by side), not one per row, and it is stored once per
        group instead of in every row's cache. Under a `members` collection with each row's
        member (`factored.assign_rows`), g = M and each row reads its member's prefix.

    Returns:
      out [b, t, d], and the new keys and values, each [b, kv, t, hd].
    """
    c = self.config
    b, t, _ = x.shape
    group = c.num_heads // c.num_kv_heads
    precision = matmul_precision(c)
    dense = lambda n, bias, name: Dense(n, use_bias=bias, dtype=c.dtype, param_dtype=c.dtype,
                                        precision=precision, name=name)
    heads_major = lambda a: a.transpose(0, 2, 1, 3)  # [b, t, h, hd] -> [b, h, t, hd]
    q = dense(c.num_heads * c.head_dim, c.qkv_bias, "q")(x)
    k = dense(c.num_kv_heads * c.head_dim, c.qkv_bias, "k")(x)
    v = dense(c.num_kv_heads * c.head_dim, c.qkv_bias, "v")(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    if c.qk_norm == "full":  # over all heads together (OLMo)
      q, k = norm(c, "q_norm")(q), norm(c, "k_norm")(k)
    q = q.reshape(b, t, c.num_heads, c.head_dim)
    k = k.reshape(b, t, c.num_kv_heads, c.head_dim)
    if c.qk_norm == "head":  # each head over head_dim (Qwen3, Gemma-3)
      q, k = norm(c, "q_norm")(q), norm(c, "k_norm")(k)
    inv_freq, attention_factor = _rope(c, layer)
    q = rope.apply(q, positions, inv_freq, attention_factor)
    k = heads_major(rope.apply(k, positions, inv_freq, attention_factor))
    v = heads_major(v)
    # Query heads of one kv group side by side: [b, kv, group * t, hd].
    q = q.reshape(b, t, c.num_kv_heads, group, c.head_dim).transpose(0, 2, 3, 1, 4)
    scale = jnp.sqrt(c.attention_scalar).astype(c.dtype)
    q = q.reshape(b, c.num_kv_heads, group * t, c.head_dim) / scale
    # Scores against the cached and the new keys separately: concatenating the keys would copy
    # the whole layer cache every call; concatenating the scores copies only [s + t, group * t].
    # Scores are keys-major, [b, kv, keys, group * t]: XLA's CPU backend ran the queries-major
    # product 6x slower on wide decode batches (256 rows, factored members).
    score = lambda keys: jnp.einsum("bksd,bkqd->bksq", keys, q, precision=precision,
                                    preferred_element_type=jnp.float32)
    mix = lambda p, values: jnp.einsum("bksq,bksd->bkqd", p.astype(c.dtype), values,
                                       precision=precision, preferred_element_type=jnp.float32)
    mask = jnp.tril(jnp.ones((t, t), bool)).T[None] & token_mask[:, :, None]  # [b, keys t, t]
    if c.has_sliding_layers:
      mask = mask & _within_window(c, layer, positions, positions)
    scores = score(k)
    if cache_positions is not None:
      slots = cache_positions.shape[1]
      layer_k, layer_v = layer_k[:, :, :slots], layer_v[:, :, :slots]
      cached = jnp.broadcast_to((cache_positions >= 0)[:, :, None], (b, slots, t))
      if c.has_sliding_layers:
        cached = cached & _within_window(c, layer, positions, cache_positions)
      mask = jnp.concatenate([cached, mask], axis=1)  # [b, s + t, t]
      scores = jnp.concatenate([score(layer_k), scores], axis=2)
    row_members = rows_of(self)
    if prefix is not None:
      prefix_k, prefix_v = prefix
      groups, shared = prefix_k.shape[0], prefix_k.shape[2]
      grouped = lambda a: _rows_to_groups(a, groups)
      if row_members is None:
        queries = grouped(q.swapaxes(2, 3)).swapaxes(2, 3)  # [g, kv, (b / g) * group * t, hd]
        prefix_scores = _groups_to_rows(jnp.einsum(
            "gksd,gkqd->gksq", prefix_k, queries, precision=precision,
            preferred_element_type=jnp.float32), b)
      else:  # each row's member's prefix, [b, kv, P, hd]
        prefix_k, prefix_v = prefix_k[row_members], prefix_v[row_members]
        prefix_scores = score(prefix_k)
      prefix_mask = jnp.ones((b, shared, t), bool)
      if c.has_sliding_layers:
        prefix_mask = _within_window(c, layer, positions,
                                     jnp.broadcast_to(jnp.arange(shared), (b, shared)))
      mask = jnp.concatenate([prefix_mask, mask], axis=1)  # [b, P + s + t, t]
      scores = jnp.concatenate([prefix_scores, scores], axis=2)
    bias = jnp.where(mask, 0.0, _MASKED).astype(jnp.float32)[:, None, :, None]  # over kv, group
    keys = scores.shape[2]
    scores = (scores.reshape(b, c.num_kv_heads, keys, group, t) + bias).reshape(scores.shape)
    probs = jax.nn.softmax(scores, axis=2)
    out = mix(probs[:, :, -t:], v)  # [b, kv, group * t, hd]
    cached_from = 0
    if prefix is not None:
      cached_from = shared
      if row_members is None:
        prefix_out = jnp.einsum("gksq,gksd->gkqd", grouped(probs[:, :, :shared]).astype(c.dtype),
                                prefix_v, precision=precision, preferred_element_type=jnp.float32)
        out = out + _groups_to_rows(prefix_out.swapaxes(2, 3), b).swapaxes(2, 3)
      else:
        out = out + mix(probs[:, :, :shared], prefix_v)
    if cache_positions is not None:
      out = out + mix(probs[:, :, cached_from:-t], layer_v)
    out = out.astype(c.dtype).reshape(b, c.num_kv_heads, group, t, c.head_dim).transpose(0, 3, 1, 2, 4)
    out = dense(c.hidden_size, False, "o")(out.reshape(b, t, c.num_heads * c.head_dim))
    return out, k, v


class MLP(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x):  # [b, t, d] -> [b, t, d]
    c = self.config
    dense = lambda n, name: Dense(n, use_bias=False, dtype=c.dtype, param_dtype=c.dtype,
                                  precision=matmul_precision(c), name=name)
    activation = {"silu": nn.silu,
                  "gelu_tanh": lambda a: nn.gelu(a, approximate=True)}[c.activation]
    hidden = activation(dense(c.intermediate_size, "gate")(x)) * dense(c.intermediate_size, "up")(x)
    return dense(c.hidden_size, "down")(hidden)


class Block(nn.Module):
  """Residual block: (x, this layer's cache) -> (x, new keys/values). Each branch (attention,
  MLP) is normed at its input ("pre"), its output ("post") or both ("sandwich")."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x, layer_cache, positions, cache_positions, token_mask, layer,
               prefix=None):
    c = self.config
    pre, post = c.norm_placement in ("pre", "sandwich"), c.norm_placement in ("post", "sandwich")
    branch_in = lambda h, name: norm(c, name)(h) if pre else h
    branch_out = lambda h, name: norm(c, name)(h) if post else h
    h, k, v = Attention(c, name="attn")(branch_in(x, "attn_norm"), positions, *layer_cache,
                                        cache_positions, token_mask, layer, prefix)
    x = x + branch_out(h, "attn_post_norm")
    x = x + branch_out(MLP(c, name="mlp")(branch_in(x, "mlp_norm")), "mlp_post_norm")
    return x, (k, v)


def _stacked_block_init(config: ModelConfig):
  """Initialiser of the `layers` parameter: `num_layers` independent Blocks, stacked."""
  def init(key):
    x = jnp.zeros((1, 1, config.hidden_size), config.dtype)
    cache = jnp.zeros((1, config.num_kv_heads, 1, config.head_dim), config.dtype)
    ones = jnp.ones((1, 1), bool)
    one_layer = lambda k: Block(config).init(k, x, (cache, cache), jnp.zeros((1, 1), jnp.int32),
                                             None, ones, 0)["params"]
    return jax.vmap(one_layer)(jax.random.split(key, config.num_layers))
  return init


class Transformer(nn.Module):
  """The whole model. Layer parameters are stacked `[layers, ...]` under `layers/`.

  One layer loop serves two ways of running the layers (`__call__`'s `layers` argument):
  scanned over the stack (compile time independent of depth), or unrolled over per-layer
  slices taken once by `layer_list` (on GPUs XLA copies each layer's weights out of the stack
  before its matmuls in a scanned loop, every decode step: B5 went from 33% to 59% of its
  roofline bound unrolled). `Block` is called in one place, `_layer_step`.
  """
  config: ModelConfig

  def setup(self):
    c = self.config
    self.embed = Embed(c.vocab_size, c.hidden_size, dtype=c.dtype, param_dtype=c.dtype)
    self.layers = self.param("layers", _stacked_block_init(c))
    self.final_norm = RMSNorm(c.rms_norm_eps, c.dtype, c.norm_offset)
    if not c.tie_embeddings:
      self.lm_head = Dense(c.vocab_size, use_bias=False, dtype=c.dtype, param_dtype=c.dtype,
                           precision=matmul_precision(c))

  def __call__(self, tokens: jax.Array, positions: jax.Array, cache,
               write_index: jax.Array, cache_positions: Optional[jax.Array], token_mask: jax.Array,
               last_only: bool = False, layers: Optional[list] = None, prefix=None):
    """Logits for `tokens` and the cache with their keys/values written at `write_index`.

    Args:
      tokens, positions: [b, t] int32 (RoPE positions, padding excluded from the count).
      cache: (k, v), each [layers, b, kv, s, hd]; with `layers`, `cache_list` of it.
      write_index: slot of this call's first token; None returns the new keys and values
        instead of the written cache (`chunk.runner` writes them itself, outside its vmap).
      cache_positions: [b, s] RoPE positions of the first s cached slots (all earlier than
        the new tokens; later slots are not read), -1 where the new tokens may not attend, or
        None when the cache is still empty (prefill).
      token_mask: [b, t] real tokens among the new ones (left padding is False).
      last_only: project only the last position to the vocabulary (prefill).
      layers: None scans the stacked layer parameters; `layer_list(params)` (or a member's)
        runs them unrolled.
      prefix: None, or the (k, v) of a prefix [0, P) that precedes every row's cache, once per
        member-major group of rows: each [layers, g, kv, P, hd] (listed per layer with
        `layers`), as a prefill of the prefix alone on g rows returns it (`Attention`).

    Under a `members` collection of M members (module docstring), b = M × rows per member,
    member-major.

    Returns:
      logits [b, t or 1, vocab] float32, the new cache (stacked or listed, as given), or with
      `write_index` None the new keys and values (each [layers, b, kv, t, hd], or listed).
    """
    step = lambda x, layer: self._layer_step(x, layer, positions, cache_positions, token_mask)
    x = self.embed(tokens)
    if self.config.embed_scale:  # √d rounded to the model's dtype, as Hugging Face
      x = x * jnp.asarray(self.config.hidden_size ** 0.5, self.config.dtype)
    members = (self.get_variable(MEMBERS, "layers") if self.has_variable(MEMBERS, "layers")
               else None)  # leaves [layers, M, ...]
    if layers is None:
      index = jnp.arange(self.config.num_layers)
      x, new_kv = jax.lax.scan(step, x, (self.layers, members, cache, prefix, index))
    else:
      new_kv = []
      for l, (layer, layer_cache) in enumerate(zip(layers, cache)):
        layer_members = None if members is None else jax.tree.map(lambda a: a[l], members)
        x, kv = step(x, (layer, layer_members, layer_cache, None if prefix is None else prefix[l],
                         l))
        new_kv.append(kv)
    if write_index is None:
      return self.logits(x, last_only), new_kv
    cache = jax.tree.map(lambda c, new: write_slots(c, new, write_index), cache, new_kv)
    return self.logits(x, last_only), cache

  def _layer_step(self, x, layer, positions, cache_positions, token_mask):
    """One layer: (x [b, t, d], (its parameters, its members or None, its (k, v) cache, its
    prefix's (k, v) or None, its index)) -> (x, new (k, v))."""
    layer_params, layer_members, layer_cache, layer_prefix, index = layer
    variables = {"params": layer_params}
    if layer_members is not None:
      variables[MEMBERS] = layer_members
    return Block(self.config, parent=None).apply(variables, x, layer_cache, positions,
                                                 cache_positions, token_mask, index,
                                                 layer_prefix)

  def logits(self, x: jax.Array, last_only: bool = False) -> jax.Array:
    """[b, t, d] last hidden states -> [b, t or 1, vocab] float32."""
    x = self.final_norm(x)
    if last_only:
      x = x[:, -1:]
    if self.config.tie_embeddings:
      logits = self.embed.logits(x, matmul_precision(self.config))
    else:
      logits = self.lm_head(x)
    return logits.astype(jnp.float32)


def layer_list(params) -> list:
  """The stacked `layers` parameters as one tree per layer (each a copy of its slice)."""
  stacked = params["layers"]
  depth = jax.tree.leaves(stacked)[0].shape[0]
  return [jax.tree.map(lambda a, l=l: a[l], stacked) for l in range(depth)]


def abstract_params(config: ModelConfig):
  """The parameter tree as `jax.ShapeDtypeStruct`s, without allocating it."""
  model = Transformer(config)
  tokens = jnp.zeros((1, 1), jnp.int32)
  cache = jax.eval_shape(lambda: init_cache(config, 1, 1))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, cache, 0,
                                               jnp.zeros((1, 1), bool), jnp.ones((1, 1), bool))["params"])
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: jax.ShapeDtypeStruct(leaf.shape, param_dtype(
          leaf.shape, path_name(path).startswith("layers/"), config.dtype)), abstract)


def forward(config: ModelConfig, params, tokens: jax.Array, mask: Optional[jax.Array] = None,
            members: Optional[dict] = None) -> jax.Array:
  """Full-sequence logits without a persistent cache (tests, scoring). tokens [b, t] ->
  [b, t, vocab], or [M, b, t, vocab] under a `members` collection of M factored members.

  `mask` [b, t] marks real tokens (left padding allowed); RoPE positions count real tokens only.
  """
  b, t = tokens.shape
  mask = jnp.ones((b, t), bool) if mask is None else mask
  count = 1 if members is None else member_count(members)
  tokens, mask = jnp.tile(tokens, (count, 1)), jnp.tile(mask, (count, 1))
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  variables = {"params": params} if members is None else {"params": params, MEMBERS: members}
  logits, _ = Transformer(config).apply(variables, tokens, positions,
                                        init_cache(config, count * b, t), 0, None, mask)
  return logits if members is None else logits.reshape(count, b, t, -1)
