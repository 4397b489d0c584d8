"""The shape of the code a newcomer relies on: the layering and no import cycles (the
import-linter contracts in pyproject.toml), small modules, small folders, one place that
publishes tasks, one registry of Redis keys, nothing that patches another library."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("worker", "tasks", "schemas", "clients", "errors")
MAX_MODULE_LINES = 400
MAX_MODULES_PER_FOLDER = 12


def product_files() -> list[Path]:
    return sorted(p for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_import_linter_contracts_are_kept():
    """The layers of pyproject.toml's [tool.importlinter] hold, and no package has a cycle."""
    out = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def strongly_connected(graph) -> list[set[str]]:
    """The import cycles among single modules (Tarjan), however the imports are written
    (inside functions too: grimp reads every import statement)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_round_a_cycle():
    assert strongly_connected(grimp.build_graph(*PRODUCT)) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=a, imported=b)
    assert strongly_connected(graph) == [{"p.a", "p.b", "p.c"}]


def test_no_product_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in product_files()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_product_folder_has_more_than_12_modules():
    folders: dict[Path, int] = {}
    for p in product_files():
        if p.name not in ("__init__.py", "__main__.py"):
            folders[p.parent] = folders.get(p.parent, 0) + 1
    assert {str(f.relative_to(ROOT)): n for f, n in folders.items() if n > MAX_MODULES_PER_FOLDER} == {}


def calls_to(attribute: str) -> set[str]:
    """The product modules that call ``<anything>.<attribute>(...)``."""
    found = set()
    for p in product_files():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute:
                found.add(str(p.relative_to(ROOT)))
    return found


def test_tasks_are_published_in_one_module():
    """Everything that queues a task calls worker/broker.py (a task's own retry aside)."""
    assert calls_to("send_task") == {"worker/broker.py"}
    assert calls_to("apply_async") == set() and calls_to("signature") == set()
    # ``x.delay(...)`` is Celery's shortcut; the only ``delay`` calls are a retry policy's
    assert all("policy.delay(" in line for p in product_files() for line in p.read_text().splitlines()
               if ".delay(" in line)


def test_redis_key_names_are_spelled_in_one_registry():
    """A key is ``{prefix}:name...``: in worker/ and tasks/ only worker/store/keys.py builds
    one. (The rate limiter in clients/ is handed its prefix, ``Keys.rate_limits``, and adds
    each bucket's name to it; the token cache is handed its whole key, ``Keys.sb1_token``.)"""
    spelled = re.compile(r"""f["']\{(self\.)?(rt\.keys\.)?(key_)?prefix\}:""")
    assert [str(p.relative_to(ROOT)) for p in product_files() if spelled.search(p.read_text())
            and p.parts[len(ROOT.parts)] in ("worker", "tasks")] == ["worker/store/keys.py"]


def test_nothing_patches_another_library_or_pins_a_cpu():
    """No assignment to a private attribute (``_name``) of anything imported from another
    library, and no CPU placement in the product (operators use taskset, cpuset or the
    kubelet for that)."""
    libraries = {"celery", "kombu", "redis", "marshmallow", "urllib3", "requests", "sentry_sdk", "flask",
                 "waitress", "redbeat", "prometheus_client"}
    patched = []
    for p in product_files():
        tree = ast.parse(p.read_text())
        imported = {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names
                    if (getattr(node, "module", None) or alias.name).split(".")[0] in libraries}
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            for t in targets:
                root = t
                while isinstance(root, ast.Attribute):
                    root = root.value
                names = []
                part = t
                while isinstance(part, ast.Attribute):
                    names.append(part.attr)
                    part = part.value
                if isinstance(root, ast.Name) and root.id in imported and any(n.startswith("_") for n in names):
                    patched.append(f"{p.relative_to(ROOT)}:{node.lineno}")
        for node in ast.walk(tree):     # os.sched_set...: CPU placement
            if isinstance(node, ast.Attribute) and node.attr.startswith("sched_set"):
                patched.append(f"{p.relative_to(ROOT)}:{node.lineno}: {node.attr}")
    assert patched == []
