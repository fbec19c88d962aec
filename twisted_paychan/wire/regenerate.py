"""
Regenerate the committed protobuf module from ``proto/paymentchannel.proto``.

We commit the generated ``paymentchannel_pb2.py`` and its mypy-protobuf stub instead of building
them at install time: users then need only the protobuf runtime, not a compiler. The price is
that the committed copy can go stale, so this module also answers "is it stale?" (``--check``),
which a test runs on every test run.

Usage::

    python -m twisted_paychan.wire.regenerate           # rewrite the committed files
    python -m twisted_paychan.wire.regenerate --check   # exit 1 if they differ from a fresh run

Generation needs the dev extra (``grpcio-tools``, ``mypy-protobuf``). Output is deterministic for
pinned versions of both, which is why setup.cfg pins them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

#: The package directory the generated files live in.
PACKAGE_DIR = Path(__file__).resolve().parent
#: The schema, in the repository beside the package (a source checkout is needed to regenerate).
PROTO_FILE = PACKAGE_DIR.parents[1] / "proto" / "paymentchannel.proto"
#: The files protoc writes for the schema, relative to the output directory.
GENERATED_FILES = ("paymentchannel_pb2.py", "paymentchannel_pb2.pyi")


class RegenerationError(RuntimeError):
    """protoc or its mypy plugin could not be run, or failed."""


def _mypy_plugin() -> str:
    # protoc finds plugins on PATH; a virtualenv's bin directory often is not on it when the
    # venv's python is run directly, so look beside the running interpreter first.
    beside = Path(sys.executable).parent / "protoc-gen-mypy"
    if beside.exists():
        return str(beside)
    found = shutil.which("protoc-gen-mypy")
    if found is None:
        raise RegenerationError("protoc-gen-mypy not found: install the dev extra (mypy-protobuf)")
    return found


def generate(out_dir: Path, proto_file: Path = PROTO_FILE) -> None:
    """Run protoc on ``proto_file``, writing the ``_pb2.py`` and ``.pyi`` into ``out_dir``."""
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped]
    except ImportError as e:  # pragma: no cover - the dev extra is installed in CI
        raise RegenerationError("grpcio-tools is not installed: install the dev extra") from e
    if not proto_file.is_file():
        raise RegenerationError(f"schema not found: {proto_file}")
    # grpc_tools ships the well-known .proto files; protoc wants them on the include path.
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{proto_file.parent}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_mypy_plugin()}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        # A bare file name relative to -I: the generated code then names the file
        # "paymentchannel.proto" and imports nothing of ours, wherever the checkout lives.
        proto_file.name,
    ]
    status = protoc.main(args)
    if status != 0:
        raise RegenerationError(f"protoc exited with status {status}")


def stale_files(package_dir: Path = PACKAGE_DIR, proto_file: Path = PROTO_FILE) -> list[str]:
    """
    Generate into a temporary directory and return the names of the committed files in
    ``package_dir`` that differ from the fresh output (missing ones included); empty when
    the committed copy is up to date.
    """
    with tempfile.TemporaryDirectory(prefix="paychan-proto-") as tmp:
        generate(Path(tmp), proto_file)
        stale = []
        for name in GENERATED_FILES:
            committed = package_dir / name
            fresh = (Path(tmp) / name).read_bytes()
            if not committed.is_file() or committed.read_bytes() != fresh:
                stale.append(name)
        return stale


def is_up_to_date(package_dir: Path = PACKAGE_DIR, proto_file: Path = PROTO_FILE) -> bool:
    """Whether the committed generated files are identical to a fresh generation."""
    return not stale_files(package_dir, proto_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twisted_paychan.wire.regenerate",
        description="Regenerate the committed protobuf module from proto/paymentchannel.proto.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed files differ from a fresh generation",
    )
    parser.add_argument("--proto", type=Path, default=PROTO_FILE, help="the .proto file")
    options = parser.parse_args(argv)
    proto_file = options.proto.resolve()
    try:
        if options.check:
            stale = stale_files(PACKAGE_DIR, proto_file)
            if stale:
                sys.stderr.write(f"stale generated files: {', '.join(stale)}; run make proto\n")
                return 1
            return 0
        generate(PACKAGE_DIR, proto_file)
    except RegenerationError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
