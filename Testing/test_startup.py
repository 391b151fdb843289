"""Start-up: the commands that need no network start without torch (and `segqc --help` without any command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
BUNDLED_MODEL = REPOSITORY / "Resources" / "Models" / "hippocampus"


def run_without(blocked: list[str], argv: list[str], report_modules: bool = False) -> subprocess.CompletedProcess:
    """Run the segqc entry point in a fresh interpreter where importing any of ``blocked`` fails."""
    code = ("import sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None\n"
            "from SegQCLib.commands.cli import main\n"
            "try:\n"
            f"    code = main({argv!r})\n"
            "except SystemExit as exc:  # argparse's --help\n"
            "    code = exc.code\n"
            + ("print('MODULES', sorted(m for m in sys.modules if m.startswith('SegQCLib.commands.')))\n"
               if report_modules else "")
            + "sys.exit(code)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPOSITORY)


def test_top_level_help_lists_every_command_without_importing_any():
    completed = run_without(["torch", "SimpleITK", "scipy"], ["--help"], report_modules=True)
    assert completed.returncode == 0, completed.stderr
    for command in ("run", "estimate", "rank", "model", "corrections"):
        assert command in completed.stdout
    assert "MODULES ['SegQCLib.commands.cli']" in completed.stdout


@pytest.mark.parametrize("argv", [["estimate", "--help"], ["corrections", "--help"], ["model", "--help"]])
def test_light_commands_start_without_torch(argv):
    completed = run_without(["torch"], argv)
    assert completed.returncode == 0, completed.stderr
    assert "usage: segqc" in completed.stdout


def test_model_info_reads_a_package_without_torch():
    completed = run_without(["torch", "safetensors"], ["model", "info", str(BUNDLED_MODEL)])
    assert completed.returncode == 0, completed.stderr
    assert "sha256" in completed.stdout and '"patch_size_zyx"' in completed.stdout
    assert "parameters:" in completed.stdout and "model card:" in completed.stdout


def test_model_info_counts_the_parameters_the_network_has():
    torch = pytest.importorskip("torch")
    from SegQCLib.network.package import load_model_package
    from SegQCLib.network.package_summary import read_package_summary
    from SegQCLib.network.qcresunet import count_parameters

    del torch
    summary = read_package_summary(BUNDLED_MODEL)
    package = load_model_package(BUNDLED_MODEL)
    assert summary.parameters == count_parameters(package.model)
    assert summary.sha256 == package.sha256


def test_model_info_refuses_a_corrupt_weights_header(tmp_path):
    import shutil

    from SegQCLib.errors import ModelError
    from SegQCLib.network.package_summary import read_package_summary

    package = tmp_path / "pkg"
    shutil.copytree(BUNDLED_MODEL, package)
    (package / "weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelError, match="corrupt safetensors header"):
        read_package_summary(package)
