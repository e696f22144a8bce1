"""The project files a script imports, read from the source (no code runs): every ``import`` and
``from ... import`` anywhere in a module, inside functions too, followed through ``eyelip``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_file(name: str) -> Path | None:
    """The file that defines module ``name`` (``eyelip.data`` -> its ``__init__.py``), if it is ours."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Every ``eyelip`` module that ``path`` names in an import, with the packages on the way."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from eyelip.data import fuse` imports the module eyelip.data.fuse
            found = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in found:
            parts = name.split(".")
            if parts[0] == "eyelip":
                names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in names if module_file(name)}


def closure(script: Path) -> dict[Path, str]:
    """Project files ``script`` imports, directly or through others, each with the chain that reaches it."""
    seen: dict[Path, str] = {}
    todo = [(script, script.relative_to(ROOT).as_posix())]
    while todo:
        path, chain = todo.pop()
        for name in sorted(imported_modules(path)):
            found = module_file(name)
            if found not in seen:
                seen[found] = f"{chain} -> {name}"
                todo.append((found, seen[found]))
    return seen


def is_docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)
