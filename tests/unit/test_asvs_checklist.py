"""docs/asvs-l2.md names, for each requirement it claims, tests that exist."""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHECKLIST = ROOT / "docs" / "asvs-l2.md"
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def _met_rows() -> list[str]:
    text = CHECKLIST.read_text()
    met = text.split("## Met", 1)[1].split("## Not met", 1)[0]
    return [line for line in met.splitlines() if line.startswith("| ") and not line.startswith(("| ASVS", "| SPEC", "|---"))]


def test_every_met_requirement_names_at_least_one_test():
    rows = _met_rows()
    assert len(rows) >= 40
    for row in rows:
        assert NODE.search(row), f"no test named for: {row[:80]}"


def test_every_test_the_checklist_names_exists():
    references = NODE.findall(CHECKLIST.read_text())
    assert references
    cache: dict[str, set[str]] = {}
    for path, name in references:
        file = ROOT / path
        assert file.exists(), path
        functions = cache.setdefault(path, _test_functions(file))
        assert name in functions, f"{path}::{name} does not exist"


def test_the_checklist_covers_the_chapters_the_issue_names():
    ids = {row.split("|")[1].strip() for row in _met_rows() if re.match(r"\| \d", row)}
    chapters = {i.split(".")[0] for i in ids}
    assert {"2", "3", "4", "5", "8", "13"} <= chapters
