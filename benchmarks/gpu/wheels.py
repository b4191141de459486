"""``make gpu-wheels``: download into ``.whl/`` exactly the wheels the GPU image lacks for stepwise.

The GPU machine (device tool, kind ``nvidia-h200``) reaches no package registry; its image has Python 3.12, jax 0.11.2
and the packages listed in ``image_packages.txt`` (read off the device tool's KINDS.md, 2026-11-17). This resolves
stepwise's requirements (``pyproject.toml`` plus neural-tangents, which ``make install`` adds with ``--no-deps``) for
CPython 3.12 on manylinux x86-64 with the image's jax pinned, keeps what the image does not have, and downloads those
wheels (``--no-deps``, one version each). flax is always carried: stepwise pins its minor version (the NNX API
changes between minors) and the image's flax version is not recorded.

Usage: ``python benchmarks/gpu/wheels.py [--dest .whl] [--dry-run]``; ``benchmarks/gpu/check.sh`` installs them there
with ``pip install --no-index --no-deps --target /tmp/site .whl/*.whl``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE_JAX = "0.11.2"
IMAGE_PYTHON = "3.12"
ALWAYS_CARRY = ("flax",)
EXTRA = ("neural-tangents==0.6.5", "frozendict>=2.3.8")  # as `make install` adds them
# neural-tangents 0.6.5 declares its TF port's requirements; stepwise never imports that port (stepwise._compat).
NEVER = ("tensorflow", "tf2jax", "tensorflow-cpu")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    text = (Path(__file__).with_name("image_packages.txt")).read_text()
    return {normalise(line.strip()) for line in text.splitlines() if line.strip() and not line.startswith("#")}


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [r for r in project["dependencies"] if normalise(re.split(r"[<>=!~ \[;]", r)[0]) != "jax"]
    return [f"jax=={IMAGE_JAX}", *reqs, *EXTRA]


def resolve(reqs: list[str]) -> dict[str, str]:
    """name -> version that pip would install for CPython 3.12 / manylinux x86-64 (no install: a report)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        platform_args = [arg for p in PLATFORMS if p != "any" for arg in ("--platform", p)]
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
               "--only-binary=:all:", "--python-version", IMAGE_PYTHON, "--implementation", "cp", *platform_args,
               "--target", str(Path(tmp) / "t"), "--report", str(report), *reqs]
        subprocess.run(cmd, check=True)
        data = json.loads(report.read_text())
    return {normalise(item["metadata"]["name"]): item["metadata"]["version"] for item in data["install"]}


def missing(resolved: dict[str, str], image: set[str]) -> dict[str, str]:
    return {name: version for name, version in sorted(resolved.items())
            if name not in NEVER and (name not in image or name in ALWAYS_CARRY)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    parser.add_argument("--dry-run", action="store_true", help="print what would be downloaded")
    args = parser.parse_args(argv)
    # neural-tangents' TF requirements are left out of the resolution: resolve it without its dependencies.
    reqs = [r for r in requirements() if not r.startswith("neural-tangents")]
    wanted = missing(resolve(reqs), image_packages())
    wanted["neural-tangents"] = "0.6.5"
    print("carried to the GPU image:", ", ".join(f"{n}=={v}" for n, v in sorted(wanted.items())))
    if args.dry_run:
        return 0
    args.dest.mkdir(exist_ok=True)
    for old in args.dest.glob("*.whl"):  # one version of each: stale wheels would stop the install there
        old.unlink()
    platform_args = [arg for p in PLATFORMS if p != "any" for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", IMAGE_PYTHON, "--implementation", "cp", *platform_args, "-d", str(args.dest),
                    *(f"{n}=={v}" for n, v in sorted(wanted.items()))], check=True)
    size = sum(p.stat().st_size for p in args.dest.glob("*.whl"))
    print(f"{len(list(args.dest.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
