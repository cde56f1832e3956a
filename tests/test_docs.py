"""The documentation stays true: excerpts match the example DAGs, relative links resolve."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
EXCERPT = re.compile(r"<!-- excerpt: (?P<source>[^ ]+) -->\s*```python\n(?P<code>.*?)```", re.S)
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def excerpts() -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        for match in EXCERPT.finditer(page.read_text(encoding="utf-8")):
            found.append((str(page.relative_to(REPO)), match["source"], match["code"]))
    return found


def _contains(source_lines: list[str], block: list[str]) -> bool:
    """Whether ``block`` equals some run of ``source_lines`` once both are dedented."""
    wanted = textwrap.dedent("\n".join(block)).strip("\n")
    size = len(block)
    for start in range(len(source_lines) - size + 1):
        if textwrap.dedent("\n".join(source_lines[start : start + size])).strip("\n") == wanted:
            return True
    return False


def test_the_docs_have_excerpts_from_every_example_dag_they_document():
    sources = {source for _, source, _ in excerpts()}
    assert {
        "dags/apicore_describe_images.py",
        "dags/apicore_batch_describe.py",
        "dags/apicore_describe_wait_styles.py",
        "dags/apicore_training_data_ready.py",
        "dags/apicore_describe_imagine_upscale.py",
        "dags/apicore_variations_zoom.py",
        "dags/apicore_sharded_batch.py",
        "dags/apicore_describe_durable.py",
    } <= sources


@pytest.mark.parametrize(("page", "source", "code"), excerpts(), ids=lambda v: str(v)[:40])
def test_every_excerpt_is_copied_verbatim_from_its_example_dag(page, source, code):
    lines = (REPO / source).read_text(encoding="utf-8").splitlines()
    block = code.rstrip("\n").splitlines()
    assert _contains(lines, block), f"{page}: the excerpt of {source} no longer matches it; copy it again"


def test_an_excerpt_that_drifted_is_caught():
    lines = (REPO / "dags/apicore_batch_describe.py").read_text().splitlines()
    assert _contains(lines, ["timeout=1800,", "deferrable=True,"])
    assert not _contains(lines, ["timeout=1799,", "deferrable=True,"])


@pytest.mark.parametrize("page", [*PAGES, REPO / "README.md", REPO / "CHANGELOG.md"], ids=lambda p: p.name)
def test_relative_links_resolve_inside_the_repository(page):
    text = page.read_text(encoding="utf-8")
    broken = []
    for match in LINK.finditer(text):
        target = match["target"].split("#", 1)[0]
        if not target or "://" in target or target.startswith("mailto:"):
            continue
        resolved = (page.parent / target).resolve()
        if not resolved.exists() or REPO not in resolved.parents:
            broken.append(match["target"])
    assert not broken, f"{page.relative_to(REPO)} links to missing or outside files: {broken}"


@pytest.mark.parametrize("page", [*PAGES, REPO / "README.md"], ids=lambda p: p.name)
def test_no_page_points_outside_the_repository_in_backticks(page):
    outside = [
        m
        for m in re.findall(r"`(\.\./[^`]+)`", page.read_text(encoding="utf-8"))
        if REPO not in (page.parent / m).resolve().parents
    ]
    assert not outside, f"{page.relative_to(REPO)} refers to files outside the repository: {outside}"
