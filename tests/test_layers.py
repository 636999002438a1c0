"""The structure the tooling enforces: the import contracts of pyproject.toml (import-linter), and
that the command line's help and loading a project pull in no solver or deep-learning library."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("scipy", "torch", "sklearn", "lightgbm", "transformers")


def test_import_contracts_hold():
    """`lint-imports` over pyproject.toml's contracts: layers, no cycles, storage apart from the
    schedulers, settings apart from numerical libraries, the engine apart from the UI."""
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                          "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_a_broken_contract_is_reported(tmp_path):
    """The check can fail: a contract the code breaks (settings importing the pipeline) is reported."""
    config = tmp_path / "contracts.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_packages = ["engine"]

        [[tool.importlinter.contracts]]
        name = "the pipeline never imports settings (false: it does)"
        type = "forbidden"
        source_modules = ["engine.pipeline"]
        forbidden_modules = ["engine.settings"]
    """))
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                          f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "BROKEN" in out.stdout


def _loaded_after(code: str) -> list[str]:
    """The heavy libraries imported once `code` has run in a fresh interpreter."""
    probe = code + f"\nimport sys\nprint('loaded:' + ','.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [line for line in out.stdout.splitlines() if line.startswith("loaded:")][-1]
    return [m for m in line.removeprefix("loaded:").split(",") if m]


def test_help_and_loading_a_project_import_no_solver(small_project):
    help_code = textwrap.dedent("""
        import sys
        from olmix_tui.cli import main
        sys.argv = ["olmix-tui", "--help"]
        try:
            main()
        except SystemExit as exit:
            assert exit.code == 0
    """)
    assert _loaded_after(help_code) == []
    load_code = textwrap.dedent(f"""
        from engine.project import Project
        from engine.status import project_status
        project = Project.load({str(small_project.root)!r})
        project_status(project)
    """)
    assert _loaded_after(load_code) == []
    assert _loaded_after("import engine.pipeline") == []
