"""The documentation stays true to the code: every setting documented (and no other), with
the code's default; every MSB1_ name anywhere in the docs and in .env.example a real
setting; every relative link and every path written in the docs pointing at a file that
exists; and a README a newcomer reads in ten minutes."""
from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from worker.config.settings import PREFIX, Settings, unknown_variables

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
README_MAX_LINES = 200
# the misspelt name the docs show as the example of the warning about a variable that is no setting
EXAMPLE_TYPO = "MSB1_RETRY_MAX_ATTEMPT"

# the row of a setting in docs/configuration.md: | `MSB1_NAME` | `default` or (none) | what |
ROW = re.compile(r"^\|\s*`(MSB1_[A-Z0-9_]+)`\s*\|\s*([^|]*?)\s*\|")
NAME = re.compile(r"\bMSB1_[A-Z0-9_]*[A-Z0-9]\b")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# a path in the repository written in backticks: `worker/store/keys.py`, `deploy/Caddyfile`
REPO_PATH = re.compile(r"^(?:worker|tasks|schemas|clients|errors|sandbox|bench|deploy|docs|scripts|contract|tests)"
                       r"/[\w./-]*$")


def documents() -> list[Path]:
    """Every document a reader is sent to: the README, docs/*.md and the benchmarks' README."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]


def code_settings() -> dict[str, object]:
    """Each setting's variable and default, named the way ``Settings.from_env`` reads them."""
    return {PREFIX + f.name.upper(): f.default for f in fields(Settings)}


def documented_settings(text: str) -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} has two rows"
            rows[match.group(1)] = match.group(2)
    return rows


def default_matches(cell: str, default: object) -> bool:
    """Does the table's default cell say what the code's default is?"""
    if default is None:
        return cell == "(none)"
    match = re.fullmatch(r"`([^`]*)`", cell)
    if not match:
        return False
    value = match.group(1)
    if isinstance(default, bool):
        return value == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(value) == float(default)
        except ValueError:
            return False
    return value == default


def test_the_code_names_its_settings_as_the_docs_test_assumes():
    """``unknown_variables`` (the code's own list of valid names) knows every name built here,
    and no other: so the check below uses the names the worker reads."""
    known = code_settings()
    assert all(f.default is not MISSING for f in fields(Settings))
    assert unknown_variables({name: "x" for name in known}) == []
    assert unknown_variables({"MSB1_NOT_A_SETTING": "x"}) != []


def test_every_setting_is_documented_and_nothing_else():
    rows = documented_settings(CONFIGURATION.read_text(encoding="utf-8"))
    code = code_settings()
    undocumented = sorted(set(code) - set(rows))
    assert not undocumented, f"docs/configuration.md lacks a row for {undocumented}"
    unknown = sorted(set(rows) - set(code))
    assert not unknown, f"docs/configuration.md documents {unknown}, which the code does not have"
    assert unknown_variables({name: "x" for name in rows}) == []


def test_every_documented_default_is_the_codes():
    rows = documented_settings(CONFIGURATION.read_text(encoding="utf-8"))
    wrong = {name: (rows[name], default) for name, default in code_settings().items()
             if name in rows and not default_matches(rows[name], default)}
    assert not wrong, f"defaults in docs/configuration.md differ from the code (doc, code): {wrong}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_msb1_name_in_the_docs_is_a_setting(path):
    names = {name: "x" for name in NAME.findall(path.read_text(encoding="utf-8")) if name != EXAMPLE_TYPO}
    assert unknown_variables(names) == [], f"{path.relative_to(ROOT)} names variables the code does not have"


def test_every_msb1_variable_in_env_example_is_a_setting():
    names = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#"):
            line = line.lstrip("# ")     # a variable commented out must be real too
        name = line.split("=", 1)[0].strip()
        if "=" in line and name.startswith(PREFIX):
            names[name] = "x"
    assert names, ".env.example lists no MSB1_ variable"
    assert unknown_variables(names) == []


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def relative_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)     # not inside code blocks
    return [target for target in LINK.findall(text)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")]


def anchors(path: Path) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+\s+(.+)$", text, flags=re.M)}


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_in_the_repository(path):
    broken = []
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve()
        if not resolved.exists() or not resolved.is_relative_to(ROOT):
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)} links to files or headings that do not exist: {broken}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_written_in_the_docs_exists(path):
    text = path.read_text(encoding="utf-8")
    written = {span for span in CODE_SPAN.findall(text) if REPO_PATH.match(span)}
    missing = sorted(span for span in written if not (ROOT / span.rstrip("/")).exists())
    assert not missing, f"{path.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_checks_can_fail(tmp_path):
    """A fake row, a setting left out, a wrong default, a broken link or anchor and a missing
    path are each caught."""
    text = CONFIGURATION.read_text(encoding="utf-8")
    fake = text + "\n| `MSB1_NO_SUCH_SETTING` | `1` | fake |\n"
    assert "MSB1_NO_SUCH_SETTING" in set(documented_settings(fake)) - set(code_settings())
    short = "\n".join(line for line in text.splitlines() if not line.startswith("| `MSB1_LOCK_WAIT`"))
    assert "MSB1_LOCK_WAIT" in set(code_settings()) - set(documented_settings(short))
    assert not default_matches("`9`", 8) and default_matches("`8`", 8)
    assert not default_matches("`2`", None) and default_matches("(none)", None)
    assert not default_matches("`true`", False) and default_matches("`600`", 600.0)
    doc = tmp_path / "doc.md"
    doc.write_text("[gone](no/such/file.md) [site](https://example.org) [here](#top)\n"
                   "```\n[in code](ignored.md)\n```\n")
    assert relative_links(doc) == ["no/such/file.md"]
    doc.write_text("# Invoices → vouchers\n## The change feed\n```\n# not a heading\n```\n")
    assert anchors(doc) == {"invoices--vouchers", "the-change-feed"}
    assert REPO_PATH.match("worker/cpu.py") and not (ROOT / "worker/cpu.py").exists()
    assert unknown_variables({"MSB1_NO_SUCH_SETTING": "x"}) != []
