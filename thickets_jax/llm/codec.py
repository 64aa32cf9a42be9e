"""Text <-> token batches around the pure generation function: chat template, length buckets,
left padding, stop tokens and stop strings."""

from typing import Sequence

import numpy as np

from thickets_jax.errors import InputError

BUCKET_STEP, LONGEST_PROMPT = 16, 4096  # prompts are padded to a multiple of 16 tokens
PREFIX_MULTIPLE = 8  # shared prefixes are cut to a multiple of this many tokens
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")  # + the EOS
# A pretrained-only model (no chat template) is asked the question as a document to continue,
# and its text is cut where it starts writing the next question.
BASE_TEMPLATE, BASE_STOP = "Question: {}\nAnswer:", "\nQuestion:"


class PromptCodec:
  """Encodes prompts into `[batches, batch_size, bucket]` arrays and decodes continuations.

  All prompts of one `encode` call are left-padded to one length bucket (the next multiple of
  `BUCKET_STEP` tokens) and split into batches of `batch_size` rows (the last padded with empty
  rows), so a run compiles once per bucket.
  """

  def __init__(self, tokenizer, *, batch_size: int, chat: bool, stop_strings: Sequence[str] = (),
               base_template: str = "{}"):
    """`chat`: wrap prompts in the tokenizer's chat template; else in `base_template` (its
    `{}` is the prompt), the tokenizer adding its special tokens (BOS) itself."""
    if batch_size <= 0:
      raise InputError(f"the prompt batch size must be positive, got {batch_size}.")
    self.tokenizer, self.batch_size, self.chat = tokenizer, batch_size, chat
    self.base_template = base_template
    self.stop_strings = tuple(stop_strings)
    self.pad_id = (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                   else tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ends = {tokenizer.eos_token_id} | {vocab[t] for t in _END_TOKENS if t in vocab}
    self.stop_ids = tuple(sorted(i for i in ends if i is not None))
    # No token covers more characters than its vocabulary string has (byte-level and
    # SentencePiece vocabularies alike), so a longer text is too long without tokenising it.
    self.longest_text = LONGEST_PROMPT * max(len(piece) for piece in vocab)

  def prompt_text(self, user_text: str) -> str:
    """The model's input text: the chat template around `user_text` for chat models, else
    `base_template`."""
    if not self.chat:
      return self.base_template.format(user_text)
    return self.tokenizer.apply_chat_template([{"role": "user", "content": user_text}],
                                              tokenize=False, add_generation_prompt=True)

  def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
    for text in texts:
      if len(text) > self.longest_text:
        raise InputError(f"a prompt of {len(text)} characters exceeds the longest supported "
                         f"prompt ({LONGEST_PROMPT} tokens).")
    return [self.tokenizer(self.prompt_text(t), add_special_tokens=not self.chat)["input_ids"]
            for t in texts]

  def check_lengths(self, texts: Sequence[str]) -> None:
    """One sentence for a prompt longer than `LONGEST_PROMPT` tokens, before any generation."""
    _check_longest(self.token_ids(texts))

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded ids [batches, batch_size, bucket] int32 and mask (True on real tokens)."""
    if not texts:
      raise InputError("there are no prompts to generate for.")
    return self._pack(self.token_ids(texts))

  def encode_shared_prefix(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The longest token prefix all prompts share, and the rest of each as `encode`.

    The prefix is rounded down to a multiple of `PREFIX_MULTIPLE` tokens (fewer compiled
    shapes) and leaves every prompt at least one token of its own.

    Returns:
      prefix [P] int32 (P may be 0), ids [batches, batch_size, bucket] int32, mask.
    """
    if not texts:
      raise InputError("there are no prompts to generate for.")
    ids = self.token_ids(texts)
    shortest = min(len(x) for x in ids)
    shared = 0
    while shared < shortest - 1 and all(x[shared] == ids[0][shared] for x in ids):
      shared += 1
    shared -= shared % PREFIX_MULTIPLE
    tokens, mask = self._pack([x[shared:] for x in ids])
    return np.asarray(ids[0][:shared], np.int32), tokens, mask

  def _pack(self, ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    longest = _check_longest(ids)
    bucket = -(-longest // BUCKET_STEP) * BUCKET_STEP
    batches = -(-len(ids) // self.batch_size)
    tokens = np.full((batches * self.batch_size, bucket), self.pad_id, np.int32)
    mask = np.zeros((batches * self.batch_size, bucket), bool)
    for row, x in enumerate(ids):
      tokens[row, bucket - len(x):] = x
      mask[row, bucket - len(x):] = True
    shape = (batches, self.batch_size, bucket)
    return tokens.reshape(shape), mask.reshape(shape)

  def decode(self, tokens: np.ndarray) -> str:
    """Text of one row [new_tokens], cut at the first stop token and the first stop string."""
    tokens = tokens.tolist()
    for i, t in enumerate(tokens):
      if t in self.stop_ids:
        tokens = tokens[:i]
        break
    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
    for stop in self.stop_strings:
      cut = text.find(stop)
      if cut >= 0:
        text = text[:cut]
    return text


def _check_longest(ids: Sequence[Sequence[int]]) -> int:
  """The longest prompt's token count; one sentence if it exceeds `LONGEST_PROMPT`."""
  longest = max((len(x) for x in ids), default=0)
  if longest > LONGEST_PROMPT:
    raise InputError(f"a prompt of {longest} tokens exceeds the longest supported prompt "
                     f"({LONGEST_PROMPT} tokens).")
  return longest
