"""Task rewards on hand-written and hostile completions; dataset loaders on files written here."""

import ast
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from thickets_jax.errors import InputError
from thickets_jax.tasks import TASKS, countdown, fuzz, math, uspto

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


@pytest.mark.parametrize("completion, reference, completion_only", [
    ("reasoning</think>\n<answer>3*5+7</answer>", 1.1, 1.05),  # the model starts inside <think>
    ("</think>\n<answer>(3+5)*7</answer>", 0.1, 0.05),
    ("<think>x</think>\n<answer>3*5+7</answer>", 1.1, 1.1),
    ("x</think> <answer>3*5+7</answer>", 1.06, 1.05),
    ("<answer>3*5+7</answer>", 1.05, 1.05),
    ("no tags", 0.0, 0.0),
])
def test_countdown_format_is_scored_as_the_reference_by_default(completion, reference,
                                                                completion_only):
  assert TASKS.get("countdown").reward(completion, P) == pytest.approx(reference)
  assert TASKS.get("countdown_completion_format").reward(completion, P) == pytest.approx(
      completion_only)


@pytest.mark.parametrize("name", ["countdown", "gsm8k", "basic_arithmetic", "gsm_symbolic",
                                  "word_sorting", "arithmetic"])
@pytest.mark.parametrize("hostile", ["<answer>" * 2**17, "<think>" * 2**17, "," * 2**20,
                                     "</think>\n<answer>" * 2**16, "1," * 2**19,
                                     "<answer>1" * 2**17 + "</answer>"])
def test_graders_take_linear_time_on_a_mebibyte(name, hostile):
  gold = GOLDS[name]
  task = TASKS.get(name)
  start = time.perf_counter()
  task.reward(hostile, gold)
  task.correct(hostile, gold)
  task.vote_key(hostile, gold)
  assert time.perf_counter() - start < 1.0  # linear graders take milliseconds; quadratic, minutes


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
  assert math.gsm8k_extract("x" * 30_000 + "#### 77") == "77"  # the tail is what counts


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


STORY = ("Ann bought a kite.", "She took it to the park.", "The wind was strong.",
         "The kite flew high.", "Ann smiled all day.")


def _jsonl(path, records):
  path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
  return str(path)


def test_rocstories_reads_the_shuffled_stories_and_scores_orders_as_the_reference(tmp_path):
  stories = [{"title": f"Kite {n}", "shuffled_sentences": [f"{STORY[i]} ({n})" for i in
                                                            (2, 0, 4, 1, 3)],
              "gold_order": [1, 3, 0, 4, 2]} for n in range(5)]
  path = _jsonl(tmp_path / "roc.jsonl", stories)
  task = TASKS.get("rocstories")
  train, test = task.splits(2, 0, 0, path)
  assert len(train) == 2 and len(test) == 3
  assert {e.gold for e in train + test} == {"BDAEC"}  # gold_order [1, 3, 0, 4, 2] as letters
  assert "Title: Kite 0\nA. The wind was strong. (0)" in train[0].prompt
  gold = "CAEBD"
  assert task.reward("<answer>C A E B D</answer>", gold) == 1.0
  assert task.correct("<answer>c,a,e,b,d</answer>", gold)
  assert task.correct("I think it goes\nC, A, E, B, D", gold)  # a last line that is an order
  # positions 3 of 5; pairs CA, AE, EB in order, BD not: the reference's 0.6/0.4 shaping
  assert task.reward("<answer>CAEDB</answer>", gold) == pytest.approx(0.6 * 3 / 5 + 0.4 * 3 / 4)
  assert task.reward("<answer>DBEAC</answer>", gold) == pytest.approx(0.6 * 1 / 5)
  for bad in ("<answer>CAEB</answer>", "<answer>CAEBDD</answer>", "<answer>CAEBF</answer>",
              "no order here", "<answer>" + "A" * 300 + "</answer>"):
    assert task.reward(bad, gold) == 0.0 and task.vote_key(bad, gold) is None
  assert task.vote_key("<answer>C-A-E-B-D</answer>", gold) == "CAEBD"
  with pytest.raises(InputError, match="lacks the field 'gold_order'"):
    task.splits(1, 0, 0, _jsonl(tmp_path / "short.jsonl", [{"shuffled_sentences": []}] * 3))
  with pytest.raises(InputError, match="'gold_order' must be a permutation of 0–4"):
    task.splits(1, 0, 0, _jsonl(tmp_path / "perm.jsonl", [{**stories[0], "gold_order": [0] * 5}] * 3))


def test_uspto50k_reads_the_class_in_the_answer(tmp_path):
  field = uspto.REACTION_FIELD
  records = [{"id": i, "class": i % 10 + 1, "prod_smiles": "CC",
              field: f"[CH3:1][C:2](=O)O.N{'C' * i}>>CC(=O)N{'C' * i}"} for i in range(6)]
  task = TASKS.get("uspto50k")
  train, test = task.splits(4, 0, 0, _jsonl(tmp_path / "uspto.jsonl", records))
  assert [e.gold for e in train + test] == ["1", "2", "3", "4", "5", "6"]
  assert "Reaction: [CH3][C](=O)O.N>>CC(=O)N\n" in train[0].prompt  # atom maps taken off
  assert "10. functional group addition" in train[0].prompt
  for answer, key in (("<answer>3</answer>", "3"), ("<answer> class 3. </answer>", "3"),
                      ("<answer>10</answer>", "10"), ("<answer>03</answer>", "3"),
                      ("<answer>11</answer>", None), ("<answer>0</answer>", None),
                      ("<answer>3, 4</answer>", None), ("3", None)):
    assert task.vote_key(answer, "3") == key, answer
    assert task.reward(answer, "3") == float(key == "3")
  with pytest.raises(InputError, match="integer from 1 to 10, got '12'"):
    task.splits(1, 0, 0, _jsonl(tmp_path / "bad.jsonl", [{"class": 12, field: "C>>C"}] * 2))
  with pytest.raises(InputError, match="reads --data PATH"):
    task.splits(1, 0, 0, None)


def test_olympiadbench_grades_its_final_answers_by_equivalence(tmp_path):
  pytest.importorskip("math_verify")
  records = [{"question": "What is 1/2 as a fraction?", "final_answer": ["$\\frac{1}{2}$"]},
             {"question": "Give x.", "final_answer": "$\\sqrt{3}$"},
             {"question": "Two roots?", "final_answer": ["$1$", "$2$"]}]
  task = TASKS.get("olympiadbench")
  train, test = task.splits(1, 0, 0, _jsonl(tmp_path / "olympiad.jsonl", records))
  assert [e.gold for e in train + test] == ["\\frac{1}{2}", "\\sqrt{3}", "1"]  # the first
  assert train[0].prompt.endswith(math.MATH_SUFFIX)
  assert task.correct("so \\boxed{0.5}", train[0].gold)
  assert not task.correct("\\boxed{0.25}", train[0].gold)
  assert task.correct("\\boxed{\\sqrt 3}", test[0].gold)
  with pytest.raises(InputError, match="lacks the field 'final_answer'"):
    task.splits(1, 0, 0, _jsonl(tmp_path / "bad.jsonl", [{"question": "q"}] * 2))


@pytest.mark.parametrize("name, record, gold", [
    ("rocstories", {"prompt": "order these", "answer": "c a e b d"}, "CAEBD"),
    ("rocstories", {"shuffled_sentences": list(STORY), "gold_order": [4, 3, 2, 1, 0]}, "EDCBA"),
    ("uspto50k", {"prompt": "classify", "answer": 7}, "7"),
    ("uspto50k", {uspto.REACTION_FIELD: "C>>CC"}, None),
    ("olympiadbench", {"question": "q", "answer": "\\frac12"}, "\\frac12")])
def test_the_new_tasks_prompt_records_round_trip(name, record, gold):
  task = TASKS.get(name)
  example = task.from_record(record)
  assert example.gold == gold
  assert task.from_record(task.to_record(example)) == example


@pytest.mark.parametrize("name, record, sentence", [
    ("rocstories", {"prompt": "p", "answer": "ABCD"}, "is not an order of the letters A–E"),
    ("uspto50k", {"prompt": "p", "answer": "eleven"}, "integer from 1 to 10"),
    ("uspto50k", {uspto.REACTION_FIELD: "CCO"}, "must be reaction SMILES with '>'")])
def test_the_new_tasks_refuse_bad_prompt_records_in_one_sentence(name, record, sentence):
  with pytest.raises(InputError, match=sentence):
    TASKS.get(name).from_record(record)


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
  golds = dict(fuzz.SYNTHETIC_GOLDS)  # the dataset tasks' stand-in golds
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


def test_arithmetic_values_follow_precedence_and_the_last_number_is_graded():
  from thickets_jax.tasks import arithmetic  # pylint: disable=g-import-not-at-top
  p = arithmetic.Problem((14, 2, 9), ("*", "-"))
  assert p.expression == "14 * 2 - 9" and p.value == 19
  assert arithmetic.Problem((3, 4, 5), ("+", "*")).value == 23
  assert arithmetic.Problem((3, 4, 5), ("-", "-")).value == -6
  assert arithmetic.correct("14 * 2 = 28, 28 - 9 = 19.", p)
  assert not arithmetic.correct("19 or maybe 20", p)
  assert arithmetic.correct("The answer is 19.0", p)
  assert not arithmetic.correct("no number here", p)
  assert arithmetic.vote_key("so 1,234", p) == "1234"
  assert arithmetic.vote_key("-7", p) == "-7" and arithmetic.vote_key("", p) is None


def test_arithmetic_problems_are_seeded_and_splits_disjoint():
  from thickets_jax.tasks import arithmetic  # pylint: disable=g-import-not-at-top
  assert arithmetic.generate(3, 20) == arithmetic.generate(3, 20)
  assert arithmetic.generate(3, 20) != arithmetic.generate(4, 20)
  for name, shape in arithmetic.ARITHMETIC_TASKS.items():
    train, test = TASKS.get(name).splits(10, 10, 0, None)
    assert len(train) == len(test) == 10 and train[0].gold != test[0].gold
    for e in train:
      assert shape.min_terms <= len(e.gold.numbers) <= shape.max_terms
      assert set(e.gold.operators) <= set(shape.operators)
      assert TASKS.get(name).correct(f"It is {e.gold.value}.", e.gold)


def test_arithmetic_grading_is_linear_on_hostile_completions():

  from thickets_jax.tasks import arithmetic  # pylint: disable=g-import-not-at-top
  p = arithmetic.Problem((1, 1), ("+",))
  for hostile in ("1," * 2**19, "-" * 2**20, "9" * 2**20, "1.1." * 2**18):
    start = time.perf_counter()
    arithmetic.correct(hostile, p)
    assert time.perf_counter() - start < 1.0  # generous: linear time is ~ms


def _gym_example(name, index=0, seed=0):
  train, _ = TASKS.get(name).splits(index + 1, 1, seed, None)
  return train[index].gold


def _ans(text):
  return f"<answer>{text}</answer>"


@pytest.mark.parametrize("name, wrong", [
    ("gsm_symbolic", lambda g: f"-{g}"),                   # the upstream scorer drops the sign
    ("gsm_symbolic", lambda g: f"{g} or 1 or 2"),         # a hedge
    ("gsm_symbolic", lambda g: f"[{g}]"),
    ("number_sorting", lambda g: str([format(float(x) + 0.9, "g") for x in ast.literal_eval(g)])),
    ("spell_backward", lambda g: f"{g} and then some more words"),
])
def test_gym_graders_refuse_the_wrong_answers_upstream_accepts(name, wrong):
  for index in range(6):
    gold = _gym_example(name, index)
    answer = gold[1]["answer"]
    assert TASKS.get(name).correct(_ans(answer), gold)
    assert TASKS.get(name).reward(_ans(answer), gold) == 1.0
    bad = _ans(wrong(answer))
    assert not TASKS.get(name).correct(bad, gold), (answer, bad)
    assert TASKS.get(name).reward(bad, gold) < 1.0


def test_gym_chain_sum_refuses_the_digit_list_of_a_negative_gold():
  gold = next(g for i in range(40)
              if len((g := _gym_example("chain_sum", i))[1]["answer"]) > 3
              and g[1]["answer"].startswith("-"))
  wrong = ",".join(gold[1]["answer"])  # '-,1,4,2,8,2' for -14282
  assert not TASKS.get("chain_sum").correct(_ans(wrong), gold)


def test_gym_number_formats_that_are_equal_are_accepted():
  gold = _gym_example("leg_counting")
  answer = gold[1]["answer"]
  for same in (answer, f" {answer} ", f"{answer}.0", f"+{answer}"):
    assert TASKS.get("leg_counting").correct(_ans(same), gold), same
  sorting = _gym_example("number_sorting")
  unquoted = "[" + ", ".join(ast.literal_eval(sorting[1]["answer"])) + "]"
  assert TASKS.get("number_sorting").correct(_ans(unquoted), sorting)


_PERTURB_NUMBER = st.one_of(
    st.integers(1, 10**6).map(lambda d: lambda g: str(int(g) + d)),
    st.integers(1, 10**6).map(lambda d: lambda g: str(int(g) - d)),
    st.sampled_from([lambda g: f"-{g}" if not g.startswith("-") else g[1:],
                     lambda g: f"{g} {g}", lambda g: f"{g}, 1", lambda g: f"[{g}]",
                     lambda g: f"{g}0", lambda g: f"{g}.5", lambda g: f"about {g}"]))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["basic_arithmetic", "chain_sum", "gsm_symbolic", "leg_counting",
                             "letter_counting"]),
       index=st.integers(0, 7), perturb=_PERTURB_NUMBER)
def test_a_perturbed_numeric_gold_is_never_correct(name, index, perturb):
  gold = _gym_example(name, index)
  answer = gold[1]["answer"]
  wrong = perturb(answer)
  if wrong.lstrip("+-") == answer.lstrip("+-") and answer.lstrip("+-") == "0":
    return  # -0 is 0
  assert not TASKS.get(name).correct(_ans(wrong), gold)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 7), position=st.integers(0, 20),
       change=st.sampled_from(["bump", "drop", "duplicate", "append text"]))
def test_a_perturbed_list_gold_is_never_correct(index, position, change):
  for name in ("number_sorting", "word_sorting", "spell_backward"):
    gold = _gym_example(name, index)
    answer = gold[1]["answer"]
    if name == "number_sorting":
      items = ast.literal_eval(answer)
      i = position % len(items)
      if change == "bump":
        items[i] = format(float(items[i]) + 0.5, "g")
      elif change == "drop":
        items.pop(i)
      elif change == "duplicate":
        items.insert(i, items[i])
      wrong = str(items) + (" extra" if change == "append text" else "")
    elif name == "word_sorting":
      words = answer.split(", ")
      i = position % len(words)
      wrong = {"bump": ", ".join(words[:i] + [words[i] + "x"] + words[i + 1:]),
               "drop": ", ".join(words[:i] + words[i + 1:]),
               "duplicate": ", ".join(words[:i + 1] + words[i:]),
               "append text": answer + " and more"}[change]
    else:
      i = position % len(answer)
      wrong = {"bump": answer[:i] + "#" + answer[i + 1:], "drop": answer[:i] + answer[i + 1:],
               "duplicate": answer[:i + 1] + answer[i:], "append text": answer + " yes"}[change]
    assert not TASKS.get(name).correct(_ans(wrong), gold), (name, answer, wrong)


def test_the_grader_fuzzer_finds_no_crash_and_no_wrong_accept():
  """In-process (the command line is covered by tests/test_experiments_1d.py)."""
  seen = []
  result = fuzz.fuzz(fuzz.FuzzConfig(inputs=60, max_chars=20000),
                     on_task=lambda name, counts: seen.append(name))
  assert set(result["tasks"]) == set(TASKS.names()) == set(seen)
  for name, counts in result["tasks"].items():
    assert counts["calls"] == 180 and counts["crashes"] == 0, name
    assert counts["wrong_accepts"] == 0 and counts["reward_out_of_range"] == 0, name
  assert result["total"]["calls"] == 180 * len(seen)


def test_the_grader_fuzzer_command_line(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-m", "experiments.fuzz_graders", "--inputs", "5",
                        "--tasks", "countdown,arithmetic", "--workdir", str(tmp_path)], cwd=root,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  results = json.loads((tmp_path / "results.json").read_text())["tasks"]
  assert set(results) == {"countdown", "arithmetic"}
  assert out.stdout.strip().splitlines()[-1] == (
      "fuzz: 30 grader calls over 2 tasks, 0 crashes, 0 over 1 s, 0 rewards out of range, "
      "0 wrong accepts")
