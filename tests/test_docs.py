"""The published report and README: every figure they link is in the repository, and the numbers name
the command that makes them."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) < 200


@pytest.mark.parametrize("page", PAGES)
def test_every_linked_figure_and_page_exists(page):
    text = (ROOT / page).read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    local = [link for link in links if "://" not in link]
    for link in local:
        assert ((ROOT / page).parent / link).exists(), f"{page} links {link}, which is not in the repository"


def test_the_report_names_its_command_and_seeds():
    text = (ROOT / "docs" / "miniature" / "README.md").read_text()
    assert "python analysis/miniature_report.py" in text and "Seeds 0, 1, 2" in text
    assert "## 1. Table 1 at L = 4 x L0" in text and "## 5. The paper's claims" in text
    assert "Provenance of the runs: commit" in text  # commit, CPU, torch, threads
    # one protocol for every run of the report, and it scores the same tokens at every length
    assert "Perplexity protocol: full sequences" in text and "differs between runs" not in text
    assert "the same tokens at every length" in text
