"""Generate the Python contracts from proto/ into libs/ame/src/ame/contracts, or check they are current.

The generated modules are written exactly as protoc emits them (no post-processing): the proto packages are
`ame.contracts.<area>.v1` and the files sit in matching directories, so the generated imports resolve as-is.
The only addition is an empty `__init__.py` in each directory, so the tree is a regular package that mypy
and import-linter can see.

    python tools/gen_proto.py          # regenerate
    python tools/gen_proto.py --check  # exit 1 if regenerating would change anything
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT / "libs" / "ame" / "src"
GENERATED = OUT_ROOT / "ame" / "contracts"


def _generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    done = subprocess.run(cmd, cwd=PROTO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"protoc failed:\n{done.stdout}{done.stderr}")
    for directory in [out / "ame" / "contracts", *(out / "ame" / "contracts").rglob("*")]:
        if directory.is_dir():
            (directory / "__init__.py").touch()


def _tree(directory: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(directory)): p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the generated code is out of date")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _generate(out)
        fresh = _tree(out / "ame" / "contracts")
        if args.check:
            current = _tree(GENERATED) if GENERATED.exists() else {}
            stale = sorted(set(fresh) ^ set(current))
            stale += sorted(k for k in set(fresh) & set(current) if not filecmp.cmp(fresh[k], current[k], False))
            if stale:
                print("generated contracts are out of date; run `make gen-proto`:", *stale, sep="\n  ")
                return 1
            print(f"generated contracts are up to date ({len(fresh)} files)")
            return 0
        if GENERATED.exists():
            shutil.rmtree(GENERATED)
        shutil.copytree(out / "ame" / "contracts", GENERATED)
        print(f"generated {len(fresh)} files into {GENERATED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
