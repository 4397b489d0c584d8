"""What ships: the production image holds the product only, every dependency pinned with
hashes. (The image itself cannot be built here, no Docker engine: the wheel it installs is
built from exactly the folders its Dockerfile copies.)"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

from conftest import ROOT

PRODUCT = {"worker", "tasks", "schemas", "clients", "errors"}


def _stage(name: str) -> str:
    text = (ROOT / "Dockerfile").read_text()
    return re.search(rf"^FROM \S+ AS {name}$(.*?)(?=^FROM |\Z)", text, re.M | re.S).group(1)


def test_the_production_wheel_holds_the_product_only(tmp_path):
    copied = set(re.findall(r"^COPY (\w+) \1$", _stage("base"), re.M))
    assert copied == PRODUCT
    for name in ("pyproject.toml", "README.md", *copied):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                          str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if not name.startswith("moment_sb1-")}
    assert top == PRODUCT


def test_the_images_install_from_hash_locked_files():
    assert "pip install --require-hashes -r requirements.lock" in _stage("base")
    assert "--require-hashes -r requirements-flower.lock" in _stage("flower")
    assert "--require-hashes -r requirements-dev.lock" in _stage("sandbox")
    app = _stage("app")
    assert "pip install --no-deps ." in app and "COPY sandbox" not in app
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "--require-hashes -r requirements-dev.lock" in setup


def test_locks_pin_everything_with_hashes_and_production_carries_no_test_or_sandbox_tools():
    for lock in ("requirements.lock", "requirements-flower.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text()
        pins = re.findall(r"^([a-z0-9_.-]+)==\S+ \\$", text, re.M)
        assert pins, lock
        blocks = re.split(r"^(?=[a-z0-9_.-]+==)", text, flags=re.M)[1:]
        assert all("--hash=sha256:" in block for block in blocks), lock
    production = set(re.findall(r"^([a-z0-9_.-]+)==", (ROOT / "requirements.lock").read_text(), re.M))
    assert {"celery", "redis", "hiredis", "urllib3", "marshmallow", "sentry-sdk", "waitress", "environs"} <= production
    # requests is the sandbox's and the tests' (the clients use urllib3, clients/http.py)
    assert not production & {"aiosmtpd", "flower", "pytest", "matplotlib", "pyyaml", "requests"}
    flower = set(re.findall(r"^([a-z0-9_.-]+)==", (ROOT / "requirements-flower.lock").read_text(), re.M))
    assert "flower" in flower and "aiosmtpd" not in flower
