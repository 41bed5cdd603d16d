"""`toren scan --image` and `toren health --security`: a security look at an image, from the host, without running
it. Nothing in the image runs: its layers come from the engine as the `docker save` tar stream, are read member by
member (tarfile in stream mode: nothing extracted, no link followed on the host, bounded in bytes, entries and time)
and applied in order with their whiteouts, so the checks see the filesystem a container of the image would start
with. An image cannot answer for itself (a `/bin/sh` that exits, or sleeps, changes nothing here)."""

from __future__ import annotations

import io
import json
import posixpath
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator

from toren_action.config.validate import image_ref
from toren_action.core.errors import UsageError
from toren_action.core.redact import CREDENTIAL_NAME, TOKEN_RE, mask_tokens
from toren_action.sandbox import container
from toren_action.sandbox.container import first_line

#: Where credentials usually hide in an image; the same names under every /home/* are checked too.
CREDENTIAL_PATHS = ("/root/.aws/credentials", "/root/.docker/config.json", "/root/.netrc", "/root/.git-credentials",
                    "/root/.ssh/id_rsa", "/root/.ssh/id_ed25519", "/root/.ssh/id_ecdsa", "/root/.ssh/id_dsa",
                    "/root/.config/gh/hosts.yml", "/root/.npmrc", "/root/.pypirc", "/root/.kube/config",
                    "/root/.config/gcloud/application_default_credentials.json", "/root/.cargo/credentials.toml",
                    "/root/.cargo/credentials", "/root/.gem/credentials", "/root/.terraform.d/credentials.tfrc.json")
_HOME_SUFFIXES = tuple(p[len("/root/"):] for p in CREDENTIAL_PATHS)
#: The engine's PATH for an image whose config sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Bounds on one scan; past any of them the scan stops and says its file checks are incomplete.
MAX_BYTES = 16 * 2**30  # of the save stream
MAX_ENTRIES = 1_000_000  # tar members, over all layers
MAX_SECONDS = 900.0
MAX_JSON_BYTES = 4 * 2**20  # a manifest or config file in the stream
MAX_LINK_HOPS = 40


class _Capped(Exception):
    pass


class _Node:
    __slots__ = ("kind", "mode", "link", "children")

    def __init__(self, kind: str, mode: int, link: str = "") -> None:
        self.kind, self.mode, self.link = kind, mode, link  # kind: dir, reg, sym, lnk (hard link), other
        self.children: dict[str, _Node] | None = {} if kind == "dir" else None

    def entries(self) -> dict[str, _Node]:
        """A directory's children (the caller knows this node is a directory)."""
        assert self.children is not None, f"a {self.kind} node has no entries"
        return self.children


class _Budget:
    def __init__(self) -> None:
        self.bytes = self.entries = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def read(self, n: int) -> None:
        self.bytes += n
        if self.bytes > MAX_BYTES:
            raise _Capped(f"stopped after {MAX_BYTES // 2**20} MiB of the image (the cap)")
        if time.monotonic() > self.deadline:
            raise _Capped(f"stopped after {MAX_SECONDS:.0f} s (the cap)")

    def entry(self) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise _Capped(f"stopped after {MAX_ENTRIES} entries (the cap)")


class _ChunkReader(io.RawIOBase):
    """A file over the engine's chunk iterator, counting what it hands on."""

    def __init__(self, chunks: Iterator[bytes], budget: _Budget) -> None:
        self._chunks, self._budget, self._rest = chunks, budget, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._budget.read(len(chunk))
            self._rest = chunk
        n = min(len(buf), len(self._rest))
        buf[:n], self._rest = self._rest[:n], self._rest[n:]
        return n


def _parts(name: str) -> tuple[str, ...] | None:
    """A member name as path components from the image root; None for one that climbs out (never valid)."""
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    return None if ".." in parts else parts


def _read_layer(fileobj, budget: _Budget) -> list[tuple]:
    """One layer tar as operations: ("delete", parts), ("opaque", parts), ("put", parts, kind, mode, link)."""
    ops: list[tuple] = []
    with tarfile.open(fileobj=fileobj, mode="r|*") as layer:
        for m in layer:
            budget.entry()
            parts = _parts(m.name)
            if parts is None:
                continue
            base = parts[-1] if parts else ""
            if base == ".wh..wh..opq":
                ops.append(("opaque", parts[:-1]))
            elif base.startswith(".wh."):
                ops.append(("delete", parts[:-1] + (base[4:],)))
            else:
                kind = ("dir" if m.isdir() else "reg" if m.isreg() else "sym" if m.issym()
                        else "lnk" if m.islnk() else "other")
                ops.append(("put", parts, kind, m.mode, m.linkname if kind in ("sym", "lnk") else ""))
    return ops


def _walk_save_stream(chunks: Iterator[bytes], budget: _Budget) -> tuple[dict, dict, dict]:
    """The save tar: layers by member name (as operations), small JSON files by name, links between members."""
    layers: dict[str, list[tuple]] = {}
    docs: dict[str, object] = {}
    links: dict[str, str] = {}
    with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks, budget), 1 << 20), mode="r|*") as outer:
        for m in outer:
            budget.entry()
            name = "/".join(_parts(m.name) or ())
            if m.issym() or m.islnk():  # a layer stored once and linked from its second place (old save format)
                target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(name), m.linkname)
                links[name] = "/".join(_parts(posixpath.normpath(target)) or ())
                continue
            if not m.isreg():
                continue
            f = outer.extractfile(m)
            if not isinstance(f, io.BufferedReader):  # never so for a regular member: tarfile.ExFileObject (peek)
                continue
            # The old format names its layers; an OCI blob is a layer or a JSON document, told by its first byte.
            metadata = name.endswith((".json", "/json", "VERSION", "repositories", "oci-layout"))
            if not name.endswith("/layer.tar") and (metadata or f.peek(1)[:1] == b"{"):
                if m.size <= MAX_JSON_BYTES:
                    try:
                        docs[name] = json.loads(f.read())
                    except ValueError:
                        pass
                continue
            try:
                layers[name] = _read_layer(f, budget)
            except tarfile.ReadError:
                pass  # not a layer
    return layers, docs, links


def _layer_order(docs: dict, links: dict) -> list[str] | None:
    manifest = docs.get("manifest.json")
    if isinstance(manifest, list) and manifest and isinstance(manifest[0], dict):
        names = manifest[0].get("Layers") or []
    else:  # OCI layout only: index.json -> manifest blob -> layer blobs
        try:
            digest = docs["index.json"]["manifests"][0]["digest"]
            blob = docs["blobs/" + digest.replace(":", "/")]
            names = ["blobs/" + layer["digest"].replace(":", "/") for layer in blob["layers"]]
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
    out = []
    for name in names:
        name = "/".join(_parts(str(name)) or ())
        for _ in range(MAX_LINK_HOPS):
            if name not in links:
                break
            name = links[name]
        out.append(name)
    return out


def _apply(root: _Node, ops: list[tuple]) -> None:
    """One layer onto the tree below it: its whiteouts hide what is below, then its entries replace or add."""
    for op in ops:
        if op[0] == "put":
            continue
        parent = _lookup(root, op[1][:-1]) if op[0] == "delete" else _lookup(root, op[1])
        if parent is None or parent.children is None:
            continue
        if op[0] == "delete":
            parent.children.pop(op[1][-1], None)
        else:
            parent.children.clear()
    for op in ops:
        if op[0] != "put":
            continue
        _, parts, kind, mode, link = op
        if not parts:
            if kind == "dir":
                root.mode = mode
            continue
        node = root
        for name in parts[:-1]:
            child = node.entries().get(name)
            if child is None or child.kind != "dir":
                child = node.entries()[name] = _Node("dir", 0o755)
            node = child
        old = node.entries().get(parts[-1])
        if kind == "dir" and old is not None and old.kind == "dir":
            old.mode = mode
        else:
            node.entries()[parts[-1]] = _Node(kind, mode, link)


def _lookup(root: _Node, parts: tuple[str, ...]) -> _Node | None:
    node = root
    for name in parts:
        if node.children is None or name not in node.children:
            return None
        node = node.children[name]
    return node


def _resolve(root: _Node, path: str) -> tuple[list[_Node], list[str], bool]:
    """Follow `path` through the image's own tree, its symlinks included (absolute targets from the image root, `..`
    stops at it); the host's filesystem is never looked at. Returns the directories and node walked, their names,
    and whether the whole path exists."""
    nodes: list[_Node] = [root]
    names: list[str] = []
    todo = [p for p in path.split("/") if p][::-1]
    hops = 0
    while todo:
        name = todo.pop()
        if name == ".":
            continue
        if name == "..":
            if names:
                nodes.pop()
                names.pop()
            continue
        here = nodes[-1]
        child = here.children.get(name) if here.children is not None else None
        if child is None:
            return nodes, names, False
        if child.kind == "sym":
            hops += 1
            if hops > MAX_LINK_HOPS:
                return nodes, names, False
            if child.link.startswith("/"):
                nodes, names = [root], []
            todo.extend([p for p in child.link.split("/") if p][::-1])
            continue
        if child.kind != "dir" and todo:
            return nodes, names, False
        nodes.append(child)
        names.append(name)
    return nodes, names, True


def _files(root: _Node) -> Iterator[tuple[str, _Node]]:
    stack = [("", root)]
    while stack:
        path, node = stack.pop()
        for name, child in (node.children or {}).items():
            stack.append((f"{path}/{name}", child))
            yield f"{path}/{name}", child


def _credential_files(root: _Node) -> list[str]:
    homes = ["/root"]
    nodes, _, found = _resolve(root, "/home")
    if found and nodes[-1].children is not None:
        homes += [f"/home/{name}" for name in sorted(nodes[-1].children)]
    found_paths = []
    for home in homes:
        for suffix in _HOME_SUFFIXES:
            nodes, _, ok = _resolve(root, f"{home}/{suffix}")
            if ok and nodes[-1].kind in ("reg", "lnk"):
                found_paths.append(f"{home}/{suffix}")
    return found_paths


def _is_credential_path(parts: tuple[str, ...]) -> bool:
    path = "/".join(parts)
    return any(path == f"root/{s}" or (len(parts) > 2 and parts[0] == "home" and "/".join(parts[2:]) == s)
               for s in _HOME_SUFFIXES)


def _setuid_files(root: _Node) -> list[str]:
    out = []
    for path, node in _files(root):
        mode = node.mode
        if node.kind == "lnk":  # a hard link shares its target's mode bits
            target = _lookup(root, _parts(node.link) or ())
            mode |= target.mode if target is not None else 0
        if node.kind in ("reg", "lnk") and mode & 0o6000:
            out.append(path)
    return sorted(out)


def _writable_path_dirs(root: _Node, path_var: str) -> list[str]:
    out = []
    for entry in path_var.split(":"):
        if not entry.startswith("/"):
            out.append(f"{entry or '(empty)'!r} is relative: the working directory is searched")
            continue
        nodes, names, found = _resolve(root, entry)
        shown = entry + ("" if "/" + "/".join(names) == entry.rstrip("/") or not found else
                         f" (-> /{'/'.join(names)})")
        if found and nodes[-1].kind != "dir":
            continue
        if found and nodes[-1].mode & 0o002:
            out.append(f"{shown} is world-writable")
            continue
        if not found and nodes[-1].mode & 0o002:
            out.append(f"{entry} does not exist and /{'/'.join(names)} where anyone can create it is world-writable")
            continue
        for i, node in enumerate(nodes[:-1] if found else nodes):
            if node.mode & 0o002 and not node.mode & 0o1000:  # no sticky bit: anyone can rename what is in it
                out.append(f"{shown}: its parent /{'/'.join(names[:i])} is world-writable")
                break
    return out


def scan_image(ref: str) -> list[tuple[str, bool, str]]:
    """(check, ok, detail) rows: the user, secrets in env/labels/history, credential files, setuid binaries,
    world-writable directories on PATH; trivy or grype when installed."""
    import docker.errors

    image_ref(ref, "--image")
    client = container.client().sdk  # the image's history and its layers: the SDK's calls
    try:
        img = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise UsageError("--image", f"{ref} is not present locally; pull or build it first") from None
    rows = []
    cfg = img.attrs.get("Config") or {}
    user = cfg.get("User") or "root"
    rows.append(("user", user not in ("root", "0", "0:0"), f"runs as {user}"))
    leaks = []
    path_var = None
    for entry in cfg.get("Env") or []:
        name, _, value = entry.partition("=")
        if name == "PATH":
            path_var = value
        if (CREDENTIAL_NAME.search(name) and value) or TOKEN_RE.search(value):
            leaks.append(f"env {name}")
    for name, value in (cfg.get("Labels") or {}).items():
        if TOKEN_RE.search(str(value)):
            leaks.append(f"label {name}")
    for layer in img.history():
        if TOKEN_RE.search(layer.get("CreatedBy") or ""):
            leaks.append(f"history: {mask_tokens(layer['CreatedBy'])[:80]}")
    rows.append(("secrets", not leaks, "; ".join(leaks) or "none in env, labels or build history"))
    rows += _look_inside(client, img.id, DEFAULT_PATH if path_var is None else path_var)
    for tool in ("trivy", "grype"):
        if shutil.which(tool):
            args = [tool, "image", "--quiet", "--exit-code", "1", "--severity", "HIGH,CRITICAL", ref] \
                if tool == "trivy" else \
                [tool, ref, "--only-fixed", "--fail-on", "high"]
            proc = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
            rows.append((tool, proc.returncode == 0, (proc.stdout or proc.stderr).strip()[-300:] or "no findings"))
            break
    else:
        rows.append(("vulnerabilities", True, "trivy or grype not on PATH: no CVE scan (install one for it)"))
    return rows


def _look_inside(client, image_id: str, path_var: str) -> list[tuple[str, bool, str]]:
    """The file checks, on the image's layers as the engine saves them (GET /images/{id}/get; nothing runs)."""
    import docker.errors

    budget = _Budget()
    note = ""
    layers: dict = {}
    docs: dict = {}
    links: dict = {}
    try:
        # The engine's own request, with the client's read timeout kept (docker-py's get_image drops it, so a
        # stalled engine would hang the scan), and closed on every way out.
        res = client.api._get(client.api._url("/images/{0}/get", image_id), stream=True)
        try:
            client.api._raise_for_status(res)
            layers, docs, links = _walk_save_stream(res.iter_content(1 << 20), budget)
        finally:
            res.close()
    except _Capped as exc:
        note = str(exc)
    except (docker.errors.DockerException, OSError, tarfile.TarError, EOFError) as exc:
        note = f"could not read the image's layers ({first_line(exc)})"
    order = _layer_order(docs, links)
    if not note and (order is None or any(name not in layers for name in order)):
        note = ("the image's layer list was missing from what the engine sent" if order is None else
                "some layers could not be read (a compression this scan does not read, such as zstd)")
    if note or order is None:  # order is None only with a note
        seen = sorted({"/" + "/".join(op[1]) for ops in layers.values() for op in ops
                       if op[0] == "put" and _is_credential_path(op[1])})
        return [("files", False, f"{note}: credential files, setuid binaries and PATH were not fully checked"),
                ("credential files", False, ", ".join(seen) + " (in the layers read)" if seen
                 else "not checked to the end")]
    root = _Node("dir", 0o755)
    present: set[tuple[str, ...]] = set()
    for name in order:
        _apply(root, layers[name])
        present.update(op[1] for op in layers[name] if op[0] == "put" and _is_credential_path(op[1]))
    creds = _credential_files(root)
    rows = [("credential files", not creds, ", ".join(creds) or "none of the usual paths")]
    buried = sorted("/" + "/".join(p) for p in present
                    if "/" + "/".join(p) not in creds and _lookup(root, p) is None)
    if buried:
        rows.append(("deleted credential files", False, ", ".join(buried) + ": deleted in a later layer but still in "
                     "an earlier one, where anyone with the image can read it"))
    suid = _setuid_files(root)
    more = f" and {len(suid) - 40} more" if len(suid) > 40 else ""
    rows.append(("setuid/setgid", True, f"{len(suid)} binaries" + (f": {', '.join(suid[:40])}{more}" if suid else "")))
    writable = _writable_path_dirs(root, path_var)
    rows.append(("PATH", not writable, ", ".join(writable) or "no world-writable directory on PATH"))
    return rows
