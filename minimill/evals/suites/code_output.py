"""Code output prediction (suite "code"): tiny generated Python snippets; the answer is what they print.

References come from running the snippet at generation time, so they are right by construction. Only
code this module generates is ever executed, with no builtins but print, range and len.
"""

from __future__ import annotations

import random

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import score, seeded, short_answer, user_item

NAME = "code"
WORDS = ("minimill", "python", "keyboard", "sandwich", "elephant", "tomorrow", "notebook", "umbrella")


def run_snippet(code: str) -> str:
    """What the snippet prints, lines joined by newlines; it runs with only print, range and len available."""
    lines: list[str] = []

    def capture(*args: object) -> None:
        lines.append(" ".join(str(a) for a in args))

    exec(code, {"__builtins__": {"print": capture, "range": range, "len": len}})
    return "\n".join(lines)


def _arithmetic(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(1, 9)
    op1, op2 = rng.choice("+-*"), rng.choice("+-")
    return f"a = {a}\nb = {b}\nprint(a {op1} b {op2} {c})"


def _loop(rng: random.Random) -> str:
    start, stop = rng.randint(0, 3), rng.randint(4, 8)
    body = rng.choice(("total += i", "total += i * 2", "total += 1"))
    return f"total = 0\nfor i in range({start}, {stop}):\n    {body}\nprint(total)"


def _string(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    i, j = rng.randint(0, 3), rng.randint(2, 4)
    expr = rng.choice((f"s[{i}:{i + j}]", "s.upper()", "s[::-1]", "s[0] + s[-1]", f"s[:{j}].upper()"))
    return f's = "{word}"\nprint({expr})'


def _list(rng: random.Random) -> str:
    xs = [rng.randint(1, 9) for _ in range(rng.randint(2, 6))]
    if rng.random() < 0.5:
        return f"xs = {xs}\nprint(len(xs))"
    return f"xs = {xs}\nxs.append({rng.randint(1, 9)})\nprint(len(xs))"


def _division(rng: random.Random) -> str:
    x, y = rng.randint(10, 99), rng.randint(2, 9)
    return f"x = {x}\ny = {y}\nprint(x {rng.choice(('//', '%'))} y)"


def _branch(rng: random.Random) -> str:
    x = rng.randint(1, 50)
    return f'x = {x}\nif x % 2 == 0:\n    print("even")\nelse:\n    print("odd")'


KINDS = (_arithmetic, _loop, _string, _list, _division, _branch)


def generate(seed: int, n: int) -> list[Item]:
    """n snippets of a seeded kind; each reference is the snippet's printed output."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        code = rng.choice(KINDS)(rng)
        prompt = f"What does this Python code print?\n\n{code}\n\nAnswer with only the printed output."
        items.append(user_item(NAME, seed, i, prompt, run_snippet(code), max_tokens=12))
    return items


def grade(item: Item, answer: str) -> float:
    """1 if the answer's first line (fences, backticks, an "Output:" prefix allowed) is exactly the output."""
    return score(short_answer(answer) == item.reference)


SUITE = Suite(
    name=NAME, version="1", description="Code output prediction: what a tiny Python snippet prints.",
    generate=generate, grade=grade,
    keywords=("what does this code print", "what does this python code", "output of", "print(", "python",
              "code", "snippet", "def ", "for i in range"),
)
