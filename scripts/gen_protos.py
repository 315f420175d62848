"""Generate the Python stubs (+ mypy stubs) for protos/ into api/giftcard.

Stubs are generated at install time rather than committed: `make gen` (run by `make venv`) is the
one command that regenerates them, and CI always builds from the .proto sources.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "api"


def main() -> int:
    target = OUT / "giftcard"
    shutil.rmtree(target, ignore_errors=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        *sources,
    ]
    if shutil.which("protoc-gen-mypy") or (Path(sys.executable).parent / "protoc-gen-mypy").exists():
        args[4:4] = [
            f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
            f"--mypy_out={OUT}",
            f"--plugin=protoc-gen-mypy_grpc={Path(sys.executable).parent / 'protoc-gen-mypy_grpc'}",
            f"--mypy_grpc_out={OUT}",
        ]
    code = protoc.main(args)
    if code != 0:
        return code
    for directory in [target, *[p for p in target.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    (target / "py.typed").touch()
    print(f"generated {len(sources)} proto files into {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
