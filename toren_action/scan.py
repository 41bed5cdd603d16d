"""`toren scan`: the diff policy on your own changes (a pre-commit hook, a range of commits) and a security look
at an image. The same rules as the check before every push (policy.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from toren_action.errors import PolicyBlocked, UsageError
from toren_action.policy import TOKEN_RE, Policy, check, mask_tokens

#: Where credentials usually hide in an image.
CREDENTIAL_PATHS = ("/root/.aws/credentials", "/root/.docker/config.json", "/root/.netrc", "/root/.git-credentials",
                    "/root/.ssh/id_rsa", "/root/.ssh/id_ed25519", "/root/.config/gh/hosts.yml", "/root/.npmrc",
                    "/root/.pypirc")
_SENSITIVE_NAME = re.compile(r"(?i)(?:^|_)(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$")


def scan_repo(cwd: str, staged: bool, diff: str | None, allow: tuple[str, ...] = (),
              exclude: tuple[str, ...] = ()) -> list:
    from toren_action import workspace

    def git(*args: str) -> str:
        return workspace.git(*args, cwd=cwd)

    try:
        git("rev-parse", "--git-dir")
    except Exception:  # noqa: BLE001 - GitError with git's own words
        raise UsageError("scan", f"{cwd} is not a git repository") from None
    if staged:
        try:
            base = git("rev-parse", "--verify", "HEAD").strip()
        except Exception:  # noqa: BLE001 - a repository with no commit yet: compare with the empty tree
            base = git("hash-object", "-t", "tree", "/dev/null").strip()
        return _without(check(git, base, None, cwd, Policy(frozenset(allow)), str), exclude)
    if diff is None or ".." not in diff:
        raise UsageError("--diff", "give a range like main..HEAD")
    base, head = diff.split("..", 1)
    for rev in (base or "HEAD", head or "HEAD"):
        try:
            git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except Exception:  # noqa: BLE001
            raise UsageError("--diff", f"{rev!r} is not a commit in this repository") from None
    return _without(check(git, base or "HEAD", head or "HEAD", cwd, Policy(frozenset(allow)), str), exclude)


def _without(findings: list, exclude: tuple[str, ...]) -> list:
    import fnmatch

    return [f for f in findings if not any(fnmatch.fnmatch(f.path, pat) for pat in exclude)]


def report(findings: list, as_json: bool) -> int:
    if as_json:
        print(json.dumps([{**f.to_dict(), "detail": mask_tokens(f.detail)} for f in findings], indent=2))
    else:
        for f in findings:
            print(mask_tokens(str(f)))
        print(f"{len(findings)} finding(s)" if findings else "no findings")
    return PolicyBlocked.exit_code if findings else 0


def scan_image(ref: str) -> list[tuple[str, bool, str]]:
    """(check, ok, detail) rows: the user, secrets in env/labels/history, credential files, setuid binaries,
    world-writable directories on PATH; trivy or grype when installed."""
    import docker.errors

    from toren_action import container
    from toren_action.validate import image_ref

    image_ref(ref, "--image")
    client = container.client()
    try:
        img = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise UsageError("--image", f"{ref} is not present locally; pull or build it first") from None
    rows = []
    cfg = img.attrs.get("Config") or {}
    user = cfg.get("User") or "root"
    rows.append(("user", user not in ("root", "0", "0:0"), f"runs as {user}"))
    leaks = []
    for entry in cfg.get("Env") or []:
        name, _, value = entry.partition("=")
        if (_SENSITIVE_NAME.search(name) and value) or TOKEN_RE.search(value):
            leaks.append(f"env {name}")
    for name, value in (cfg.get("Labels") or {}).items():
        if TOKEN_RE.search(str(value)):
            leaks.append(f"label {name}")
    for layer in img.history():
        if TOKEN_RE.search(layer.get("CreatedBy") or ""):
            leaks.append(f"history: {mask_tokens(layer['CreatedBy'])[:80]}")
    rows.append(("secrets", not leaks, "; ".join(leaks) or "none in env, labels or build history"))
    script = ("for p in " + " ".join(CREDENTIAL_PATHS) + "; do [ -e \"$p\" ] && echo \"cred $p\"; done; "
              "find / -xdev -type f -perm /6000 2>/dev/null | head -50 | sed 's/^/suid /'; "
              "IFS=:; for d in $PATH; do [ -d \"$d\" ] && "
              "[ -n \"$(find \"$d/\" -maxdepth 0 -perm -0002 2>/dev/null)\" ] && echo \"ww $d\"; done; true")
    try:
        out = client.containers.run(img.id, ["/bin/sh", "-c", script], user="0", network_mode="none",
                                    remove=True, entrypoint=[], stderr=True).decode("utf-8", "replace")
    except docker.errors.APIError as exc:
        rows.append(("files", False, f"could not look inside ({container._first_line(exc)})"))
        out = ""
    creds = [ln[5:] for ln in out.splitlines() if ln.startswith("cred ")]
    suid = [ln[5:] for ln in out.splitlines() if ln.startswith("suid ")]
    writable = [ln[3:] for ln in out.splitlines() if ln.startswith("ww ")]
    rows.append(("credential files", not creds, ", ".join(creds) or "none of the usual paths"))
    rows.append(("setuid/setgid", True, f"{len(suid)} binaries" + (f": {', '.join(suid[:8])}" if suid else "")))
    rows.append(("PATH", not writable, ", ".join(f"{d} is world-writable" for d in writable)
                 or "no world-writable directory on PATH"))
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


def install_hook(repo: Path) -> Path:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/bin/sh\n# installed by toren: the diff policy on what is about to be committed\n"
                    "exec toren scan --staged\n")
    hook.chmod(0o755)
    return hook
