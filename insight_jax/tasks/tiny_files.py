"""Tiny files in the public formats of the paper's datasets, for smoke runs and tests.

`write_tiny_files(directory)` writes, under the names and layouts the paper's configs expect
(configs/paper_common.py), a few dozen rows of:

    countdown/train-00000-of-00001.parquet   Countdown-Tasks-3to4: target int64, nums list<int64>
    deepscaler/train/deepscaler.json         DeepScaleR-Preview: a JSON array of problem,
                                             answer, solution ("" as often in the real file)
    deepscaler/test/{aime,amc,math,minerva,olympiad_bench}.json   its eval sets (problem, answer)
    math500/test.jsonl                       MATH-500: problem, solution, answer, subject, level,
                                             unique_id
    webinstruct/train.parquet                WebInstruct-verified: question, answer, answer_type,
                                             category, difficulty
    mmlu/test.parquet                        MMLU: question, subject, choices list, answer int
    gpqa/gpqa_diamond.jsonl                  GPQA: Question, Correct Answer, Incorrect Answer 1-3

The problems are simple arithmetic with exact answers (a tiny random policy solves none of them;
the files exist to run every code path on a CPU). Content is a deterministic function of
`seed`; a folder is complete once its COMPLETE marker exists (written last, so an interrupted
write is redone).
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

from insight_jax.tasks.countdown import CountdownTask

MARKER = "COMPLETE"
NUM_COUNTDOWN = 48  # rows [:32] train, [32:48] test in the tiny configs
NUM_MATH_TRAIN = 48
NUM_EVAL = 8


def _latex(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    sign = "-" if q < 0 else ""
    return f"{sign}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"


def _math_problem(rng: random.Random) -> tuple[str, str]:
    """(problem, answer in LaTeX) of one of a few arithmetic forms."""
    a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
    form = rng.randrange(3)
    if form == 0:
        return f"What is ${a} + {b} \\times {c}$?", str(a + b * c)
    if form == 1:
        return f"Compute $\\frac{{{a}}}{{{c}}} + \\frac{{{b}}}{{{c}}}$.", _latex(Fraction(a + b, c))
    return f"Solve for $x$: ${c}x - {a} = {b}$.", _latex(Fraction(a + b, c))


def _write_parquet(path: Path, columns: dict[str, list]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_tiny_files(directory: str | Path, seed: int = 0) -> Path:
    """Writes the tiny files under `directory` (unless complete already) and returns it."""
    root = Path(directory)
    if (root / MARKER).is_file():
        return root
    rng = random.Random(seed)
    for sub in (
        "countdown",
        "deepscaler/train",
        "deepscaler/test",
        "math500",
        "webinstruct",
        "mmlu",
        "gpqa",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)

    cd = CountdownTask(num_numbers=(3, 4), max_number=50).generate(NUM_COUNTDOWN, seed)
    _write_parquet(
        root / "countdown/train-00000-of-00001.parquet",
        {"target": [r["target"] for r in cd], "nums": [r["nums"] for r in cd]},
    )

    train = [_math_problem(rng) for _ in range(NUM_MATH_TRAIN)]
    (root / "deepscaler/train/deepscaler.json").write_text(
        json.dumps([{"problem": p, "answer": a, "solution": ""} for p, a in train], indent=1)
    )
    for name in ("aime", "amc", "math", "minerva", "olympiad_bench"):
        rows = [_math_problem(rng) for _ in range(NUM_EVAL)]
        # AMC answers are often stored as numbers in the public files.
        answers = [float(a) if name == "amc" and a.isdigit() else a for _, a in rows]
        (root / f"deepscaler/test/{name}.json").write_text(
            json.dumps(
                [{"problem": p, "answer": a} for (p, _), a in zip(rows, answers, strict=True)]
            )
        )
    _write_jsonl(
        root / "math500/test.jsonl",
        [
            {
                "problem": p,
                "solution": f"So the answer is $\\boxed{{{a}}}$.",
                "answer": a,
                "subject": "Prealgebra",
                "level": 1 + i % 5,
                "unique_id": f"test/tiny/{i}.json",
            }
            for i, (p, a) in enumerate(_math_problem(rng) for _ in range(NUM_EVAL))
        ],
    )

    web = [_math_problem(rng) for _ in range(NUM_MATH_TRAIN)]
    _write_parquet(
        root / "webinstruct/train.parquet",
        {
            "question": [p for p, _ in web],
            "answer": [a for _, a in web],
            "answer_type": ["Integer" if a.lstrip("-").isdigit() else "Fraction" for _, a in web],
            "category": ["Mathematics"] * len(web),
            "difficulty": ["Primary School"] * len(web),
        },
    )

    questions, choices, answers = [], [], []
    for _ in range(NUM_EVAL):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        options = sorted({a + b, a + b + 1, a + b - 1, a * b})
        while len(options) < 4:
            options.append(options[-1] + 2)
        rng.shuffle(options)
        questions.append(f"What is {a} + {b}?")
        choices.append([str(o) for o in options])
        answers.append(options.index(a + b))
    _write_parquet(
        root / "mmlu/test.parquet",
        {
            "question": questions,
            "subject": ["elementary_mathematics"] * NUM_EVAL,
            "choices": choices,
            "answer": answers,
        },
    )
    gpqa = []
    for _ in range(NUM_EVAL):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        gpqa.append(
            {
                "Question": f"What is {a} times {b}?",
                "Correct Answer": str(a * b),
                **{f"Incorrect Answer {j}": str(a * b + j) for j in (1, 2, 3)},
            }
        )
    _write_jsonl(root / "gpqa/gpqa_diamond.jsonl", gpqa)
    (root / MARKER).write_text("")
    return root
