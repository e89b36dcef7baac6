"""The pure core imports no I/O library: no git, kubernetes, network, clock
or filesystem access. Checked on the import graph of every core module."""

import ast
import pathlib

CORE = pathlib.Path(__file__).resolve().parent.parent / "reconciler" / "core"
FORBIDDEN = {
    "git", "kubernetes", "urllib", "http", "socket", "requests", "subprocess",
    "watchdog", "prometheus_client", "time", "datetime.datetime.now", "os",
    "shutil", "threading", "asyncio", "reconciler.adapters", "reconciler.cli",
    "reconciler.controller",
}
PURE = {"urllib.parse"}   # string parsing only: no I/O behind it (a URL's shape is checked at load time)


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module


def test_core_imports_no_io_library():
    bad = []
    for path in sorted(CORE.rglob("*.py")):
        for lineno, name in _imports(path):
            top = name.split(".")[0]
            if name in PURE:
                continue
            if name in FORBIDDEN or top in FORBIDDEN or any(name.startswith(f + ".") for f in FORBIDDEN):
                bad.append(f"{path.relative_to(CORE.parent.parent)}:{lineno}: imports {name}")
    assert not bad, "core must stay pure:\n" + "\n".join(bad)


def test_core_exists():
    assert (CORE / "model.py").exists()
