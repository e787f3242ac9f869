"""Calibrate the grader: grade each master over many grading seeds; a correct answer must never
lose a point. With ``--mutants``: how often each wrong answer of ``tests/grading`` is caught;
with ``--variants``: each correct-but-different answer there over the seeds (it must not lose).

    python -m tools.calibrate_grader --seeds 0-199            # every assignment
    python -m tools.calibrate_grader 05_scaling_laws --seeds 0-49 --json calibration.json
    python -m tools.calibrate_grader --mutants --seeds 0-19

For speed the answers run in this process, not in the sandbox: the master's answer cells are
executed once, then every check of every question is built with each grading seed (the same
`runner._build_checks` the grader uses), its calls are made with the sandbox's own call and
decode functions (`_child.call_result`, `protocol.decode_call`: same gradients, same rule
observations, same value transport) and its judge decides. Prints, per check, how many seeds
failed it (the false-failure count; its 95% upper bound when zero is 3/seeds, the rule of
three) and the first failure message; exits 1 if any check failed for any seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def parse_seeds(text: str) -> list[int]:
    """``"0-199"`` or ``"3,5,8"`` -> a list of ints."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def answer_namespace(assignment, source: Path | None = None) -> dict:
    """Execute a notebook's answer cells (the master's by default) after the preamble."""
    from deepscope.grading.notebook import ANSWER_TAG, SHELL_SHIM, python_source

    nb = nbformat.read(source or ROOT / assignment.master, as_version=4)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(assignment.preamble + SHELL_SHIM, "<preamble>", "exec"), namespace)  # noqa: S102
    for i, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "code" and ANSWER_TAG in cell.metadata.get("tags", []):
            exec(compile(python_source(cell.source), f"<cell {i}>", "exec"), namespace)  # noqa: S102
    return namespace


def judge_check(fn, calls, judge) -> str:
    """Make a check's calls in this process and judge them; return "" or the failure."""
    from deepscope.grading import Fail
    from deepscope.grading._child import call_result
    from deepscope.grading.protocol import decode_call

    outs = []
    for index, call in enumerate(calls):
        args, kwargs = copy.deepcopy((call.args, call.kwargs))  # as the sandbox gets copies
        frame = call_result(index, fn, (args, kwargs, call.grad_of, call.observed))
        kind, value = decode_call(frame)[1]
        if kind == "error":
            return f"{value['type']}: {value['message']}"
        outs.append(value)
    try:
        judge(outs)
    except Fail as fail:
        return str(fail)
    return ""


def calibrate(assignment_id: str, seeds: list[int], questions=None) -> list[dict]:
    """Grade the master of ``assignment_id`` in this process once per seed; return one row per
    check: its name, points, the seeds it failed and the first message."""
    from deepscope.grading import load_assignment
    from deepscope.grading.runner import _build_checks

    assignment = load_assignment(assignment_id)
    namespace = answer_namespace(assignment)
    rows = []
    for question in assignment.questions:
        if questions and question.function not in questions:
            continue
        fn = namespace[question.function]
        for name, correct in assignment.substitutes.items():
            if name != question.function:
                namespace.setdefault(name, correct)
        failures: dict[int, list] = {i: [] for i in range(len(question.checks))}
        start = time.perf_counter()
        for seed in seeds:
            for i, (calls, judge) in enumerate(_build_checks(question, "cpu", seed)):
                message = judge_check(fn, calls, judge)
                if message:
                    failures[i].append((seed, message))
        seconds = time.perf_counter() - start
        for i, check in enumerate(question.checks):
            rows.append({"assignment": assignment_id, "function": question.function,
                         "check": check.name, "points": check.points, "seeds": len(seeds),
                         "failed_seeds": [s for s, _ in failures[i]],
                         "first_message": failures[i][0][1] if failures[i] else "",
                         "seconds_per_seed": seconds / len(seeds)})
    return rows


def mutant_rates(assignment_id: str, seeds: list[int]) -> list[dict]:
    """Grade every new mutant of ``tests/grading/mutants.py`` (one question each) once per seed
    in this process; return, per mutant, the seeds where it kept every point and its mean
    points."""
    from deepscope.grading import load_assignment
    from deepscope.grading.runner import _build_checks

    sys.path.insert(0, str(ROOT))
    from tests.grading.mutants import (
        LOOKUP,
        NEW_MUTANTS,
        lookup_mutant,
        master_solution,
        mutate,
    )
    from tests.grading.test_mutants_and_variants import published_fingerprints

    assignment = load_assignment(assignment_id)
    master = ROOT / assignment.master
    rows = []
    for function, mutants in NEW_MUTANTS.get(assignment_id, {}).items():
        question = assignment.question(function)
        solution = master_solution(master, function)
        for kind, name, change in mutants:
            if change == LOOKUP:
                change = lookup_mutant(solution, function,
                                       published_fingerprints(assignment, function))
            namespace = answer_namespace(assignment)
            from deepscope.grading.notebook import python_source

            exec(compile(python_source(mutate(solution, change)), "<mutant>", "exec"),  # noqa: S102
                 namespace)
            survived, points = [], []
            for seed in seeds:
                got = sum(c.points for c, (calls, judge) in
                          zip(question.checks, _build_checks(question, "cpu", seed))
                          if not judge_check(namespace[function], calls, judge))
                points.append(got)
                if got == question.points:
                    survived.append(seed)
            rows.append({"assignment": assignment_id, "function": function, "kind": kind,
                         "mutant": name, "seeds": len(seeds), "survived_seeds": survived,
                         "mean_points": sum(points) / len(points), "max_points": question.points})
    return rows


def variant_rates(assignment_id: str, seeds: list[int]) -> list[dict]:
    """Grade every correct-but-different answer of ``tests/grading/variants.py`` once per seed in
    this process; return, per variant, the seeds where it lost a point (it must not)."""
    from deepscope.grading import load_assignment
    from deepscope.grading.notebook import python_source
    from deepscope.grading.runner import _build_checks

    sys.path.insert(0, str(ROOT))
    from tests.grading.mutants import master_solution, mutate
    from tests.grading.variants import VARIANTS

    assignment = load_assignment(assignment_id)
    rows = []
    for kind, name, changes in VARIANTS.get(assignment_id, []):
        namespace = answer_namespace(assignment)
        for function, change in changes.items():
            source = mutate(master_solution(ROOT / assignment.master, function), change)
            exec(compile(python_source(source), "<variant>", "exec"), namespace)  # noqa: S102
        lost = []
        for seed in seeds:
            for function in changes:
                question = assignment.question(function)
                if any(judge_check(namespace[function], calls, judge) for calls, judge in
                       _build_checks(question, "cpu", seed)):
                    lost.append((seed, function))
        rows.append({"assignment": assignment_id, "kind": kind, "variant": name,
                     "seeds": len(seeds), "lost": lost})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", help="assignment ids (default: all)")
    parser.add_argument("--seeds", default="0-199", help="e.g. 0-199 or 1,2,3")
    parser.add_argument("--question", action="append", help="only these functions")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--mutants", action="store_true",
                        help="instead: how often each new mutant of tests/grading is caught")
    parser.add_argument("--variants", action="store_true",
                        help="instead: grade each correct-but-different answer of tests/grading")
    args = parser.parse_args(argv)
    import torch
    from deepscope.grading.runner import ASSIGNMENTS

    torch.set_num_threads(1)
    seeds = parse_seeds(args.seeds)
    rows = []
    if args.variants:
        for assignment_id in args.assignments or list(ASSIGNMENTS):
            for row in variant_rates(assignment_id, seeds):
                rows.append(row)
                print(f"{row['assignment']:<24} {row['kind']:<16} lost points on "
                      f"{len(row['lost'])}/{row['seeds']} seeds {row['lost'][:5]}  "
                      f"{row['variant']}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return 1 if any(r["lost"] for r in rows) else 0
    if args.mutants:
        for assignment_id in args.assignments or list(ASSIGNMENTS):
            for row in mutant_rates(assignment_id, seeds):
                rows.append(row)
                print(f"{row['assignment']:<24} {row['function']:<28} {row['kind']:<10} "
                      f"caught {row['seeds'] - len(row['survived_seeds'])}/{row['seeds']}, mean "
                      f"{row['mean_points']:.2f}/{row['max_points']:g}  {row['mutant']}",
                      flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return 1 if any(r["survived_seeds"] for r in rows) else 0
    for assignment_id in args.assignments or list(ASSIGNMENTS):
        for row in calibrate(assignment_id, seeds, args.question):
            rows.append(row)
            failed = len(row["failed_seeds"])
            bound = f"< {3 / row['seeds']:.1%} (95%)" if not failed else \
                f"= {failed / row['seeds']:.1%}"
            print(f"{row['assignment']:<24} {row['function']:<28} {failed:>3}/{row['seeds']} "
                  f"false failures (rate {bound})  {row['seconds_per_seed']:.2f} s/seed  "
                  f"{row['check'][:60]}", flush=True)
            if failed:
                print(f"    seeds {row['failed_seeds'][:10]}: {row['first_message'][:400]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if any(r["failed_seeds"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
