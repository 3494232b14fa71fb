"""The budgets the type checker is held to (issue 23), counted with ast and tokenize over drkit/:
at most 25 `# type: ignore`, each with its code and a reason on its line; at most 15 public
signatures with a bare dict or Any, each at the JSON edge and saying so on its line; no module
over 600 lines; no manifest read by string key. `mypy` itself runs in ./scripts/test."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "drkit"
SOURCES = sorted(PACKAGE.rglob("*.py"))
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]+\])?(?P<rest>.*)")


def comments(path: Path) -> list[tuple[int, str]]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [(token.start[0], token.string) for token in tokens if token.type == tokenize.COMMENT]


def test_type_ignores_are_few_and_each_gives_its_code_and_reason() -> None:
    found = [
        (path.relative_to(PACKAGE.parent), line, match)
        for path in SOURCES
        for line, text in comments(path)
        if (match := IGNORE.search(text))
    ]
    unexplained = [
        f"{path}:{line}"
        for path, line, match in found
        if not match["codes"] or len(match["rest"].strip(" #-:")) < 8
    ]
    assert not unexplained, "a type: ignore needs [code] and a reason:\n" + "\n".join(unexplained)
    assert len(found) <= 25, f"{len(found)} type: ignore comments (at most 25)"


def loose(annotation: ast.expr | None) -> bool:
    """Return whether an annotation is Any, a bare dict/list, or a dict/list of Any or dict."""
    if annotation is None:
        return False
    text = ast.unparse(annotation)
    return bool(
        re.search(r"\bAny\b", text)
        or re.fullmatch(r"(dict|list|Dict|List)( \| None)?", text)
        or re.search(r"\b(dict|list)\[(str, )?dict\]", text)
    )


def test_loose_public_signatures_are_only_at_the_json_edge_and_few() -> None:
    edges, unmarked = [], []
    for path in SOURCES:
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.name.startswith("_") and not node.name.startswith("__"):
                continue
            arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            annotations = [argument.annotation for argument in arguments] + [node.returns]
            if not any(loose(annotation) for annotation in annotations):
                continue
            header = "\n".join(lines[node.lineno - 1 : node.body[0].lineno - 1])
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
            (edges if "# JSON edge:" in header else unmarked).append(where)
    assert not unmarked, "Any or a bare dict in a public signature:\n" + "\n".join(unmarked)
    assert len(edges) <= 15, f"{len(edges)} JSON-edge signatures (at most 15):\n" + "\n".join(edges)


def test_no_module_is_over_600_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE.parent)}: {count}"
        for path in SOURCES
        if (count := len(path.read_text().splitlines())) > 600
    ]
    assert not long, "modules over 600 lines:\n" + "\n".join(long)


def test_no_manifest_is_read_by_string_key() -> None:
    reads = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            target = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                target = node.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                target = node.func.value
            if target is not None and re.search(r"manifest\b", ast.unparse(target)):
                reads.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not reads, "manifest read by string key:\n" + "\n".join(reads)
