"""All data figures of issue 3 in one run: dataset build times, cached-loader throughput, trim vs centre crop.

    .venv/bin/python benchmarks/data.py

Each part is its own script (data_build.py, data_loader.py, trim_vs_centre.py) and can be run alone
with its own options; this one runs them with their defaults, one after another.
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(name: str) -> int:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"\n== {name} ==", flush=True)
    return module.main([])


if __name__ == "__main__":
    sys.exit(max(run(n) or 0 for n in ("data_build", "data_loader", "trim_vs_centre")))
