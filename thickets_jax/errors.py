"""The one exception type for bad user input."""


class InputError(ValueError):
  """Bad user input: its message is one sentence that says what is wrong and how to fix it."""
