"""What the benchmark scripts share. bench/ is the script's folder, so this
module is importable by its (unique) name."""

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent


def bench_module(name: str):
    """bench/<name>.py, loaded by path: a test helper module in tests/e2e has the same name."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
