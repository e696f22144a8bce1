"""The user docs stay true: every relative link resolves, the README stays a short guide, and
params.yaml documents every key (the docs link to its comments instead of copying them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
README_LIMIT = 12_000  # characters: a guide for a first reader; the details live in docs/

LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def links(text: str) -> list[str]:
    """Link and image targets outside code blocks and code spans."""
    return LINK.findall(CODE_SPAN.sub("", FENCE.sub("", text)))


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", h.replace("`", "").strip().lower()).replace(" ", "-")
        for h in HEADING.findall(FENCE.sub("", text))
    }


def broken_links(page: Path) -> list[str]:
    text = page.read_text()
    broken = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_links_its_pages() -> None:
    targets = links((REPO / "README.md").read_text())
    for page in (
        "docs/pipeline.md",
        "docs/workflows.md",
        "docs/scaling.md",
        "docs/experiments.md",
        "benchmarks/README.md",
        "params.yaml",
    ):
        assert page in targets


def test_the_checker_catches_a_broken_link_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title here\n\n## Use `it`, now?\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](a.md#use-it-now) [file](missing.md) [anchor](a.md#nope) [web](https://x.org/y)\n"
        "```\n[in code](also-missing.md)\n```\n`[span](missing-too.md)`\n"
    )
    assert [b.split(":")[0] for b in broken_links(page)] == ["missing.md", "a.md#nope"]


def test_the_readme_is_a_short_guide() -> None:
    size = len((REPO / "README.md").read_text())
    assert size <= README_LIMIT, (
        f"README.md has {size} characters (limit {README_LIMIT}): move detail to a page in docs/ and link it"
    )


def undocumented_keys(text: str) -> list[str]:
    """Dotted keys of a YAML file whose line has no comment. The entries of a mapping whose own line
    is commented (e.g. the default target under data.targets) count as documented by it."""
    missing, stack = [], []  # stack: (indent, key, commented)
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w-]*):", line)
        if not match:
            continue
        indent, key, commented = len(match[1]), match[2], "#" in line
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not commented and not (stack and stack[-1][2] and stack[-1][1] in {"targets", "aux_targets"}):
            missing.append(".".join([k for _, k, _ in stack] + [key]))
        stack.append((indent, key, commented))
    return missing


def test_every_key_in_params_yaml_has_a_comment() -> None:
    assert undocumented_keys("a:  # x\n  b: 1\n  targets:  # y\n    t: [1]\n") == ["a.b"]
    assert undocumented_keys((REPO / "params.yaml").read_text()) == [], (
        "params.yaml's comments are the reference for each key: add one to each key listed"
    )


def test_the_package_map_names_every_module_and_package() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| \[?`([a-z_]+)/?`", section, re.MULTILINE))
    src = REPO / "src" / "eyelip"
    actual = {p.stem for p in src.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in src.iterdir() if (p / "__init__.py").is_file()
    }
    assert listed == actual, (
        f"README package map lists {sorted(listed - actual)} not in src/eyelip, misses {sorted(actual - listed)}"
    )
