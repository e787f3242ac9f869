"""Near-duplicate answers in a graded folder: evidence for a human to weigh, not a verdict.

    deepscope grade submissions/01_saliency --similarity similarity.md --similarity-threshold 0.8

For each question, the code the grader ran (the cells defining the function and what they use)
becomes a stream of tokens of its syntax tree, *normalised*: names a submission chose (variables,
arguments, its own functions) are renumbered in order of first use, docstrings and comments are
gone, formatting is irrelevant; attribute and library names (``torch.autograd.grad``, ``.norm``)
and constants stay. Each answer is the set of its ``n``-grams of tokens (MOSS-style shingles,
Schleimer, Wilkerson & Aiken 2003), without the n-grams of the released stub and without those
that more than half of the answers share (idioms everyone writes are no evidence). Two answers'
similarity is the Jaccard index of their sets; pairs at or above the threshold are listed.

Small functions have few ways to be written: answers with fewer than ``min_grams`` distinct
n-grams are reported as too short to compare rather than matched. Independently written correct
answers can still look alike, and a copied answer can be rewritten beyond recognition, so a
listed pair is a reason to read two notebooks side by side, nothing more.
"""

from __future__ import annotations

import ast
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .checks import Assignment
from .notebook import (
    SHELL_SHIM,
    Cell,
    NotebookError,
    _analyse,
    cells_for,
    code_cells,
    read_notebook,
)

NGRAM = 8
MIN_GRAMS = 20
COMMON = 0.5


def tokens(source: str, keep: set[str] = frozenset()) -> list[str]:
    """Return the normalised token stream of Python source (see the module docstring); names in
    ``keep`` (the preamble's: torch, np, F, ...) are kept as they are."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: dict[str, str] = {}
    out: list[str] = []

    def name(identifier: str) -> str:
        if identifier in keep:
            return identifier
        return names.setdefault(identifier, f"v{len(names)}")

    def visit(node) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(type(node).__name__)
            out.append(name(node.name))
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(
                    body[0].value.value, str):
                body = body[1:]  # the docstring
            for child in [*getattr(node, "decorator_list", []), getattr(node, "args", None),
                          *getattr(node, "bases", []), *body]:
                if child is not None:
                    visit(child)
            return
        out.append(type(node).__name__)
        if isinstance(node, ast.Name):
            out.append(name(node.id))
        elif isinstance(node, ast.arg):
            out.append(name(node.arg))
        elif isinstance(node, ast.Attribute):
            out.append("." + node.attr)
        elif isinstance(node, ast.Constant):
            out.append("str" if isinstance(node.value, str) else repr(node.value))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.extend(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.expr_context, ast.operator, ast.cmpop, ast.unaryop,
                                      ast.boolop)):
                visit(child)
            else:
                out.append(type(child).__name__)

    visit(tree)
    return out


def shingles(stream: Sequence[str], n: int = NGRAM) -> set[tuple]:
    """The set of n-grams of a token stream."""
    return {tuple(stream[i:i + n]) for i in range(len(stream) - n + 1)}


@dataclass
class Pair:
    """Two answers to one question that look alike."""

    function: str
    first: str
    second: str
    similarity: float
    shared: int
    sizes: tuple[int, int]


def similar_pairs(answers: dict[str, str], *, base: str = "", keep: set[str] = frozenset(),
                  threshold: float = 0.8, n: int = NGRAM, min_grams: int = MIN_GRAMS,
                  function: str = "") -> tuple[list[Pair], list[str]]:
    """Compare every pair of answers (id -> source); return the pairs at or above
    ``threshold`` (most similar first) and the ids of answers too short to compare."""
    template = shingles(tokens(base, keep), n) if base else set()
    sets = {who: shingles(tokens(src, keep), n) - template for who, src in answers.items()}
    counts = Counter(g for s in sets.values() for g in s)
    if len(sets) >= 4:
        common = {g for g, k in counts.items() if k > COMMON * len(sets)}
        sets = {who: s - common for who, s in sets.items()}
    short = sorted(who for who, s in sets.items() if len(s) < min_grams)
    pairs = []
    for a, b in itertools.combinations(sorted(w for w in sets if w not in short), 2):
        shared = len(sets[a] & sets[b])
        union = len(sets[a] | sets[b])
        score = shared / union if union else 0.0
        if score >= threshold:
            pairs.append(Pair(function, a, b, score, shared, (len(sets[a]), len(sets[b]))))
    pairs.sort(key=lambda p: (-p.similarity, p.first, p.second))
    return pairs, short


def answer_sources(path: str | Path, assignment: Assignment) -> dict[str, str]:
    """The code each question of a notebook runs (function -> source); {} if unreadable."""
    try:
        cells, _ = code_cells(read_notebook(path))
    except NotebookError:
        return {}
    provided = _analyse(Cell(0, assignment.preamble + SHELL_SHIM)).defines
    found = {}
    for q in assignment.questions:
        needed, problem = cells_for(cells, q.function, provided)
        if not problem:
            found[q.function] = "\n\n".join(c.source for c in needed)
    return found


def report(paths: Sequence[str | Path], ids: Sequence[str], assignment: Assignment, *,
           threshold: float = 0.8, n: int = NGRAM, min_grams: int = MIN_GRAMS,
           student_copy: str | Path | None = None) -> str:
    """Return the Markdown table of near-duplicate answers of a graded folder, per question."""
    keep = _analyse(Cell(0, assignment.preamble)).defines | {"self"}
    sources = {who: answer_sources(path, assignment) for who, path in zip(ids, paths)}
    stubs = answer_sources(student_copy, assignment) if student_copy else {}
    lines = ["# Similar answers", "",
             f"{len(ids)} submissions of {assignment.id}; threshold {threshold:g} (Jaccard "
             f"index of normalised {n}-grams of syntax-tree tokens, without the released stub "
             f"and without passages in more than half of the answers).", "",
             "**Similarity is evidence for a human to weigh, not a verdict:** short functions "
             "have few ways to be written, and people who learnt from the same notes write "
             "alike. Read both notebooks before drawing any conclusion.", ""]
    for number, q in enumerate(assignment.questions, start=1):
        answers = {who: src[q.function] for who, src in sources.items() if q.function in src}
        pairs, short = similar_pairs(answers, base=stubs.get(q.function, ""), keep=keep,
                                     threshold=threshold, n=n, min_grams=min_grams,
                                     function=q.function)
        lines += [f"## {number}. {q.function}", ""]
        if pairs:
            lines += ["| Student | Student | Similarity | Shared n-grams |", "|---|---|---|---|"]
            lines += [f"| {_cell(p.first)} | {_cell(p.second)} | {p.similarity:.2f} | "
                      f"{p.shared} of {p.sizes[0]} and {p.sizes[1]} |" for p in pairs]
        else:
            lines.append(f"No pair at or above {threshold:g}.")
        if short:
            lines.append(f"\nToo short to compare ({len(short)}): "
                         + ", ".join(_cell(s) for s in short))
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
