"""`--task NAME`: prompts, answer extraction, shaped rewards and vote keys (docs/method.md §4).

Every task gives `Example`s (the user message and what scoring needs) for a train and a test
split that never overlap, and four functions of a completion: the shaped reward the ranking
uses, whether it is correct (accuracy), its canonical vote key (None casts no vote), and the
gold vote key. Model output is untrusted text: nothing here executes it.
"""

from thickets_jax.tasks import (  # importing a module registers its tasks
    arithmetic, countdown, gym, math, mbpp, rocstories, uspto)
from thickets_jax.tasks.base import TASKS, Example, Task

__all__ = ["TASKS", "Example", "Task", "arithmetic", "countdown", "gym", "math", "mbpp",
           "rocstories", "uspto"]
