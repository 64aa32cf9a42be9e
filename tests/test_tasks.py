"""Task rewards on hand-written and hostile completions; dataset loaders on files written here."""

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from thickets_jax.errors import InputError
from thickets_jax.tasks import TASKS, countdown, math

P = countdown.Problem((3, 5, 7), 22)


@pytest.mark.parametrize("completion, reward", [
    ("<think>3*5=15, 15+7=22</think>\n<answer>3*5+7</answer>", 1.1),   # full format, right
    ("<think>x</think>\n<answer>(3+5)*7</answer>", 0.1),                # full format, wrong value
    ("<think>x</think> <answer>3*5+7</answer>", 1.06),                  # no newline: 0.1+0.5 format
    ("<answer>3*5+7</answer>", 1.05),                                   # answer block only
    ("<think>only thinking</think>", 0.01),
    ("3*5+7", 0.0),                                                     # no tags
    ("<answer>7+3*5</answer>", 1.05),                                   # any order of the numbers
    ("<answer>3*5+7+7</answer>", 0.05),                                 # a number reused
    ("<answer>3*5+8</answer>", 0.05),                                   # wrong multiset
    ("<answer>3*5*7</answer>", 0.05),                                   # right numbers, wrong value
    ("<answer>3 ** 5 + 7</answer>", 0.05),                              # power is not allowed
    ("<answer>(3/(5-5))+7</answer>", 0.05),                             # division by zero
    ("<answer>99999999*3+5+7</answer>", 0.05),                          # huge literal
    ("<answer>３*５+７</answer>", 0.05),                                  # full-width digits
    ("<answer>__import__('os')</answer>", 0.05),                        # code is text
    ("<answer>2+2</answer> <answer>3*5+7</answer>", 1.05),              # the last answer counts
    ("<answer>3*5+7</answer> <answer>2+2</answer>", 0.05),
    ("<answer>-3+5*7-10</answer>", 0.05),                               # 10 is not given
    ("<answer>7*(5-3)+3*2+2</answer>", 0.05),
])
def test_countdown_rewards(completion, reward):
  assert countdown.reward(completion, P) == pytest.approx(reward)


def test_countdown_exact_fractions_and_vote_keys():
  q = countdown.Problem((1, 2, 3), 2)
  assert countdown.correct("<answer>(1+2)/3*2</answer>", countdown.Problem((1, 2, 3, 2), 2))
  assert countdown.vote_key("<answer>3/2*1</answer>", countdown.Problem((1, 2, 3), 2)) == "3/2"
  assert countdown.vote_key("<answer>(2+1)*3</answer>", countdown.Problem((1, 2, 3), 9)) == "9"
  assert countdown.vote_key("no answer", q) is None
  assert countdown.vote_key("<answer>1+2+4</answer>", q) is None


def test_countdown_generator_is_seeded_and_solvable():
  a, b = countdown.generate(3, 50), countdown.generate(3, 50)
  assert a == b and countdown.generate(4, 50) != a
  for p in a:
    assert 3 <= len(p.numbers) <= 4 and all(1 <= n <= 99 for n in p.numbers) and p.target >= 1


def test_gsm8k_extraction():
  assert math.gsm8k_extract("so 3+4=7\n#### 1,234") == "1234"
  assert math.gsm8k_extract("The answer is 18.00 dollars.") == "18"
  assert math.gsm8k_extract("first 3 then -2.5") == "-2.5"
  assert math.gsm8k_extract("#### no number at first, then 12") == "12"
  assert math.gsm8k_extract("nothing") is None
  assert math.canonical_number("$1,000.") == "1000"


def test_math_answers_by_equivalence():
  pytest.importorskip("math_verify")
  assert math.last_boxed(r"so \boxed{\frac{1}{2}} and later \boxed{x^{2}+1}") == "x^{2}+1"
  assert math.last_boxed(r"\boxed{unclosed") is None
  assert math.math_correct(r"the answer is \boxed{\frac{1}{2}}", "0.5")
  assert math.math_correct(r"\boxed{\dfrac{2}{4}}", r"\frac12")
  assert not math.math_correct(r"\boxed{3}", "4")
  assert math.math_vote_key(r"\boxed{\frac{2}{4}}", "") == math.math_vote_key(r"\boxed{\frac{1}{2}}", "")
  assert math.math_vote_key("no box", "") is None


def test_dataset_loaders_read_local_files_and_never_reuse_train(tmp_path):
  gsm = tmp_path / "gsm.jsonl"
  gsm.write_text("\n".join(json.dumps({"question": f"q{i}?", "answer": f"work\n#### {i},000"})
                           for i in range(7)))
  train, test = TASKS.get("gsm8k").splits(3, 0, 0, str(gsm))
  assert [e.gold for e in train] == ["0", "1000", "2000"]
  assert [e.gold for e in test] == ["3000", "4000", "5000", "6000"]
  assert train[0].prompt.endswith('output the final answer after "####".')
  pq = pytest.importorskip("pyarrow.parquet")
  import pyarrow  # pylint: disable=g-import-not-at-top
  path = tmp_path / "math.parquet"
  pq.write_table(pyarrow.Table.from_pylist([{"problem": f"p{i}", "answer": str(i)} for i in range(5)]), path)
  train, test = TASKS.get("math500").splits(2, 2, 0, str(path))
  assert [e.gold for e in train] == ["0", "1"] and [e.gold for e in test] == ["2", "3"]
  with pytest.raises(InputError, match="none left for a test split"):
    TASKS.get("math500").splits(5, 0, 0, str(path))
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"question": "q"}\n')
  with pytest.raises(InputError, match="lacks the field 'answer'"):
    TASKS.get("gsm8k").splits(1, 0, 0, str(bad))


HOSTILE = st.one_of(
    st.text(max_size=400),
    st.builds(lambda s: f"<answer>{s}</answer>", st.text(alphabet="0123456789+-*/() .eE^%", max_size=300)),
    st.builds(lambda n: "<answer>" + "(" * n + "1" + ")" * n + "</answer>", st.integers(0, 5000)),
    st.builds(lambda n: f"<answer>{'9' * n}</answer>", st.integers(1, 5000)),
    st.builds(lambda s: f"<think>{s}</think>\n<answer>{s}</answer> #### {s} \\boxed{{{s}}}",
              st.text(max_size=200)),
    st.just("\\boxed{" * 3000), st.just("#### " + "1" * 10000),
)


def _golds():
  golds = {"gsm8k": "42", "math500": r"\frac{1}{2}"}
  for name in TASKS.names():
    if name not in golds:
      train, _ = TASKS.get(name).splits(1, 1, 0, None)
      golds[name] = train[0].gold
  return golds


GOLDS = _golds()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HOSTILE)
def test_every_reward_survives_hostile_text(completion):
  for name, gold in GOLDS.items():
    task = TASKS.get(name)
    start = time.perf_counter()
    reward = task.reward(completion, gold)
    task.vote_key(completion, gold)
    assert 0.0 <= reward <= task.max_reward, name
    assert time.perf_counter() - start < 10, name


def test_reasoning_gym_tasks_score_their_own_answers():
  for name in ("basic_arithmetic", "letter_counting", "word_sorting"):
    train, test = TASKS.get(name).splits(3, 2, 5, None)
    assert len(train) == 3 and len(test) == 2
    assert {e.prompt for e in train}.isdisjoint({e.prompt for e in test})
    for example in train:
      _, entry = example.gold
      right = f"<think>…</think><answer>{entry['answer']}</answer>"
      assert TASKS.get(name).correct(right, example.gold)
      assert not TASKS.get(name).correct("<answer>definitely wrong</answer>", example.gold)
