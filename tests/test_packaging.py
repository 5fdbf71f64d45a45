"""What a user gets: a wheel that works outside the repository, and a README whose Python runs.

Both run the real thing in subprocesses from empty temporary folders, so nothing from the checkout
(its working directory, a stray config file) can help them pass.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--set", "seg.image_size=64", "--set", "seg.encoder_depth=3", "--set", "seg.decoder_channels=[16,8,4]",
    "--set", "seg.epochs=1", "--set", "seg.max_train_images=16", "--set", "cls.image_size=64",
    "--set", "cls.epochs=1", "--set", "cls.batch_size=8", "--set", "cls.patience=0", "--set", "device=cpu",
]  # fmt: skip


def _run(cmd: list, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    return {**env, "LUNGAUDIT_CACHE": str(tmp_path / "cache"), "COLUMNS": "200", **extra}


def test_wheel_runs_the_whole_job_outside_the_repo(tmp_path: Path):
    dist, site, work = tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    env = _env(tmp_path)
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO], tmp_path, env)
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("lungaudit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"lungaudit/configs/default.yaml", "lungaudit/configs/gate.yaml", "lungaudit/report/report.js"} <= names
    assert any(n.endswith("LICENSE") for n in names)
    assert _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel], tmp_path, env).returncode == 0

    env = _env(tmp_path, PYTHONPATH=str(site))
    where = _run([sys.executable, "-c", "import lungaudit; print(lungaudit.__file__)"], work, env)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel, not the checkout

    def la(*args: object) -> subprocess.CompletedProcess:
        return _run([sys.executable, "-m", "lungaudit.cli.main", *args], work, env)

    assert la("--version").stdout.startswith("lungaudit ")
    assert la("synth", "d", "--n-per-class", 8, "--size", 64, "--workers", 1).returncode == 0
    trained = la("train", "d", "--name", "t", *TINY)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    audited = la("audit", "--run", "runs/train/t", "--split", "test", "--name", "a", "--workers", 0)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert (work / "runs/audit/a/report.html").is_file()
    gated = la("gate", "runs/audit/a")  # the packaged default policy
    assert gated.returncode in (0, 1), gated.stdout + gated.stderr
    assert json.loads((work / "runs/audit/a/gate.json").read_text())["n_conditions"] >= 4
    dumped = la("config", "--dump", "lungaudit.yaml")
    assert dumped.returncode == 0 and (work / "lungaudit.yaml").read_text().startswith("# lungaudit default configuration")


def _readme_python() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README.md: no ```python block in the 'Python API' section"
    return "\n".join(blocks)


def test_readme_python_section_runs_as_written(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    proc = _run([sys.executable, "-c", _readme_python()], work, _env(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_help_shows_documented_functions():
    proc = subprocess.run([sys.executable, "-c", "import lungaudit as la, pydoc; print(pydoc.render_doc(la.audit))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "function audit" in proc.stdout and "Audit every prediction" in proc.stdout


@pytest.mark.parametrize("name", ["synth", "inspect", "train", "audit", "report", "gate", "compare", "apply_review", "demo", "load_run"])
def test_every_public_function_is_documented(name: str):
    import inspect

    import lungaudit

    fn = getattr(lungaudit, name)
    assert inspect.isfunction(fn) and (fn.__doc__ or "").strip(), f"lungaudit.{name} needs a docstring"
