"""Mutation testing of the modules that hold promises: each one-token mutant (a comparison,
an operator, a constant, a boolean, min/max) is applied to a private copy of the tree and the
module's tests run against it; a mutant the tests do not kill is a promise nothing guards.

Why not mutmut: mutmut 3 mutates a copy of the sources under `mutants/` and expects the tests to
import that copy, but here `lofi.runtime` is the `package-dir` mapping of an editable install,
which resolves to the original tree. This runner imports its copy through a `lofi/` folder of
links placed first on PYTHONPATH, checks that the tests really import the mutated module (a
probe that raises on import must fail them), and changes one token at a time.

    python bench/mutate.py runtime/postprocess.py --tests tests/test_postprocess.py \
        [--tests ...] [--lines 10-80] [--json bench/results/mutation/postprocess.json]

Lines marked `# pragma: no mutate` are skipped (say why next to it). Mutation runs take longer
than CI allows and stay out of it; docs/RELIABILITY.md records the scores.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "trainer", "export", "cpp_ext", "configs")  # lofi.X is the folder X
COMPARE_SWAPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
BINOP_SWAPS = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
}
CALL_SWAPS = {"min": "max", "max": "min", "any": "all", "all": "any"}


@dataclass
class Mutant:
    line: int
    what: str
    source: str = ""
    outcome: str = ""


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        value = first.value if isinstance(first, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            ids.add(id(value))
    return ids


def _variants(node: ast.AST) -> list[tuple[str, callable]]:
    """(description, function that mutates a copy of this node in place) pairs."""
    out: list[tuple[str, callable]] = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE_SWAPS:
                new = COMPARE_SWAPS[type(op)]
                out.append(
                    (
                        f"{type(op).__name__} -> {new.__name__}",
                        lambda n, i=i, new=new: n.ops.__setitem__(i, new()),
                    )
                )
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINOP_SWAPS:
        new = BINOP_SWAPS[type(node.op)]
        out.append(
            (
                f"{type(node.op).__name__} -> {new.__name__}",
                lambda n, new=new: setattr(n, "op", new()),
            )
        )
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        out.append(
            (
                f"{type(node.op).__name__} -> {new.__name__}",
                lambda n, new=new: setattr(n, "op", new()),
            )
        )
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        out.append((f"drop {type(node.op).__name__}", None))  # replaced by its operand
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        v = node.value
        if isinstance(v, bool):
            new_value = not v
        elif v == 0:
            new_value = type(v)(1)
        else:
            new_value = v + 1 if isinstance(v, int) else v * 2 if abs(v) < 1 else v + 1
        out.append(
            (
                f"{v!r} -> {new_value!r}",
                lambda n, new_value=new_value: setattr(n, "value", new_value),
            )
        )
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in CALL_SWAPS:
            new_name = CALL_SWAPS[node.func.id]
            out.append(
                (
                    f"{node.func.id} -> {new_name}",
                    lambda n, new_name=new_name: setattr(n.func, "id", new_name),
                )
            )
    elif isinstance(node, ast.Break):
        out.append(("break -> continue", None))
    elif isinstance(node, ast.Continue):
        out.append(("continue -> break", None))
    return out


class _Replace(ast.NodeTransformer):
    """Replace the node at one walk position with its mutated copy."""

    def __init__(self, target: int, what: str, mutate):
        self.target, self.what, self.mutate, self.position = target, what, mutate, -1

    def visit(self, node):
        self.position += 1
        if self.position == self.target:
            new = copy.deepcopy(node)
            if self.mutate is not None:
                self.mutate(new)
                return new
            if isinstance(node, ast.UnaryOp):
                return new.operand
            if isinstance(node, ast.Break):
                return ast.copy_location(ast.Continue(), node)
            if isinstance(node, ast.Continue):
                return ast.copy_location(ast.Break(), node)
        return super().visit(node)


def mutants(source: str, lines: tuple[int, int] | None) -> list[tuple[Mutant, str]]:
    tree = ast.parse(source)
    skip_ids = _docstring_nodes(tree) | _annotation_nodes(tree)
    text_lines = source.splitlines()
    order: list[ast.AST] = []

    class _Order(ast.NodeVisitor):
        def visit(self, node):
            order.append(node)
            super().visit(node)

    _Order().visit(tree)
    out = []
    for position, node in enumerate(order):
        if id(node) in skip_ids or not hasattr(node, "lineno"):
            continue
        line = node.lineno
        if lines and not lines[0] <= line <= lines[1]:
            continue
        if "pragma: no mutate" in text_lines[line - 1]:
            continue
        for what, fn in _variants(node):
            mutated = _Replace(position, what, fn).visit(copy.deepcopy(tree))
            ast.fix_missing_locations(mutated)
            out.append((Mutant(line, what, text_lines[line - 1].strip()), ast.unparse(mutated)))
    return out


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """Nodes inside type annotations mutate nothing at run time (`from __future__ import
    annotations` leaves them unevaluated)."""
    skip: set[int] = set()
    for n in ast.walk(tree):
        anns = []
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            anns.append(n.returns)
            anns += [a.annotation for a in n.args.args + n.args.kwonlyargs]
        if isinstance(n, ast.AnnAssign):
            anns.append(n.annotation)
        for a in anns:
            if a is not None:
                skip.update(id(x) for x in ast.walk(a))
    return skip


def make_copy(work: Path) -> Path:
    tree = work / "tree"
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "*.egg-info",
        "__pycache__",
        "runs",
        "lofi-demo-out",
        ".ci-*",
        "bench-runtime-work",
        ".gpu-*",
        "mutants",
        ".pytest_cache",
        ".hypothesis",
    )
    shutil.copytree(ROOT, tree, ignore=ignore, symlinks=True)
    pkg = tree / "lofi"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in PACKAGES:
        os.symlink(tree / name, pkg / name)
    return tree


def run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        *tests,
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start
    took = time.perf_counter() - start
    return ("survived" if proc.returncode == 0 else "killed"), took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module", help="a file under runtime/, trainer/, export/ or cpp_ext/")
    ap.add_argument("--tests", action="append", required=True, help="pytest paths (repeat)")
    ap.add_argument("--lines", help="only mutate lines A-B")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--limit", type=int, default=0, help="stop after N mutants (0: all)")
    args = ap.parse_args()
    lines = tuple(int(x) for x in args.lines.split("-")) if args.lines else None
    module = Path(args.module)
    source = (ROOT / module).read_text()
    todo = mutants(source, lines)
    if args.limit:
        todo = todo[: args.limit]
    with tempfile.TemporaryDirectory(prefix="lofi-mutate-") as tmp:
        tree = make_copy(Path(tmp))
        baseline, took = run_tests(tree, args.tests, timeout=3600)
        if baseline != "survived":
            print(f"error: the tests fail on the unmutated tree ({baseline})", file=sys.stderr)
            return 1
        probe = tree / module
        probe.write_text(source + "\nraise ImportError('mutation probe')\n")
        if run_tests(tree, args.tests, timeout=took * 3 + 30)[0] == "survived":
            print(f"error: the tests never import {module}", file=sys.stderr)
            return 1
        timeout = took * 3 + 15
        print(f"{module}: {len(todo)} mutants, baseline {took:.1f} s", flush=True)
        for i, (m, mutated_source) in enumerate(todo, 1):
            probe.write_text(mutated_source)
            m.outcome, _ = run_tests(tree, args.tests, timeout)
            mark = "." if m.outcome != "survived" else "S"
            print(f"[{i}/{len(todo)}] {mark} line {m.line}: {m.what}   {m.source[:70]}", flush=True)
        probe.write_text(source)
    done = [m for m, _ in todo]
    killed = sum(m.outcome != "survived" for m in done)
    score = killed / len(done) if done else 1.0
    print(f"{module}: {killed}/{len(done)} killed, score {score:.1%}")
    for m in done:
        if m.outcome == "survived":
            print(f"  survived: line {m.line}: {m.what}: {m.source}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "module": str(module),
                    "tests": args.tests,
                    "killed": killed,
                    "total": len(done),
                    "score": score,
                    "mutants": [asdict(m) for m in done],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
