"""Make sure the pinned numpy and gguf (tools/requirements-reference.txt) are importable.

Call ensure() before importing numpy or gguf. If the running interpreter lacks the pinned
versions, a venv is created once (EMBER_REFERENCE_VENV, default
~/.cache/ember-reference/venv-reference), the pins are installed into it with pip from PyPI,
and the calling script is re-executed with that venv's Python.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIREMENTS = os.path.join(ROOT, "tools", "requirements-reference.txt")


def pins():
    out = {}
    with open(REQUIREMENTS) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if "==" in line:
                name, ver = line.split("==")
                out[name.strip().lower()] = ver.strip()
    return out


def _have_pins():
    try:
        import numpy
        import gguf  # noqa: F401
        from importlib.metadata import version
    except ImportError:
        return False
    p = pins()
    return numpy.__version__ == p["numpy"] and version("gguf") == p["gguf"]


def ensure():
    if _have_pins():
        return
    venv = os.environ.get("EMBER_REFERENCE_VENV") or os.path.expanduser("~/.cache/ember-reference/venv-reference")
    py = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        sys.exit(f"reference: {venv} does not hold the pins of {REQUIREMENTS}; delete it and rerun")
    if not os.path.exists(py):
        print(f"reference: creating {venv} with the pins of {REQUIREMENTS}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", REQUIREMENTS],
                   check=True, stdout=sys.stderr)
    os.execv(py, [py, os.path.abspath(sys.argv[0])] + sys.argv[1:])
