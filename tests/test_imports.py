"""Every mono_utils module imports on its own, whichever is imported first (no import cycles)."""
import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import mono_utils
names = sorted(m.name for m in pkgutil.walk_packages(mono_utils.__path__, "mono_utils.") if not m.name.endswith("__main__"))
failed = []
for name in names:
    for k in [k for k in sys.modules if k == "mono_utils" or k.startswith("mono_utils.")]:
        del sys.modules[k]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print(len(names))
print("\\n".join(failed))
"""


def test_each_module_imports_first():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert int(lines[0]) > 20 and lines[1:] == [], "\n".join(lines[1:])
