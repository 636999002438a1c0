"""engine/ must run without the UI libraries (textual, typer) or the UI package: the TUI and CLI sit on top of it.

(rich may be present: LightGBM imports it.)
"""

import pkgutil
import subprocess
import sys
from pathlib import Path

import engine


def test_engine_imports_no_ui_library():
    modules = sorted(m.name for m in pkgutil.walk_packages(engine.__path__, "engine."))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'typer', 'olmix_tui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(engine.__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"engine pulled in UI modules: {out.stdout}"
