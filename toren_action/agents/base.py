"""The contract of an agent profile. A new coding CLI is one new subclass plus a stream parser.

A profile is data (npm package, pinned version, credentials, base-URL variables, switches that stop side
traffic) and a little code: the headless command line and a parser that turns the CLI's JSON stream into
readable log lines, usage figures and a verdict on failures (bad key, rate limit, turn limit).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

#: Where the pinned Node runtime and the agent CLIs live in the agent image.
NODE_PREFIX = "/opt/toren/node"
CLI_PREFIX = "/opt/toren/cli"
#: argv placeholder the launcher replaces with the prompt file's text.
PROMPT_ARG = "@TOREN_PROMPT@"


#: An agent CLI's session id (Claude Code's session, Codex's thread): a UUID. What a CLI's stream reports is the
#: agent's text: nothing else is taken, kept or passed back to it.
SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def session_link(session_dir: str, home_path: str) -> str:
    """Shell that makes ``$HOME/<home_path>`` (where the CLI keeps its sessions) a link to the job's session
    directory (mounted writable), so that the sessions outlive the container."""
    parent = home_path.rsplit("/", 1)[0]
    return f'mkdir -p "$HOME/{parent}" && ln -sfn "{session_dir}" "$HOME/{home_path}" && '


@dataclass(frozen=True)
class RunContext:
    """What a profile may use to build its command line (all paths are inside the container)."""

    prompt_file: str
    model: str | None
    command: str | None
    secrets_dir: str
    #: Names of the credential files present in ``secrets_dir``.
    credentials: tuple[str, ...] = ()
    max_turns: int | None = None
    max_cost_usd: float | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    #: Non-secret variables taken from the host (base URLs of gateways), already filtered by the profile.
    passthrough: dict[str, str] = field(default_factory=dict)
    #: True when Toren's key proxy holds the API key and the CLI reaches the API through a socket.
    key_proxy: bool = False
    #: The base URL the CLI uses to reach the key proxy's relay (TCP CLIs), when key_proxy is on.
    key_proxy_url: str | None = None
    #: Where the CLI keeps its sessions in the container (a directory of the job's, writable), when it may.
    session_dir: str | None = None
    #: The session of the round before to continue (a review round), when the CLI resumes sessions.
    resume_session: str | None = None


@dataclass(frozen=True)
class Credential:
    """One way to authenticate a CLI. ``name`` is the host variable holding the value (and the name of the
    read-only file it becomes in the container); ``file_var`` is a host variable naming a file that holds it;
    ``default_file`` is a well-known file in the user's home (a subscription login)."""

    name: str
    description: str
    file_var: str | None = None
    default_file: str | None = None


@dataclass(frozen=True)
class KeyProxySpec:
    """How a CLI can use Toren's host-side key proxy: over a unix socket named by ``socket_env`` (Claude
    Code), or, for CLIs that speak only TCP, through a relay on the container's loopback that the CLI's base URL
    points at (``socket_env`` None)."""

    credential: str  # the credential the proxy holds, e.g. ANTHROPIC_API_KEY
    socket_env: str | None  # the CLI's variable for a unix socket to the API; None: the loopback relay
    base_url_env: str  # the host variable naming the real API (the proxy's upstream)
    default_url: str
    header: str = "x-api-key"
    value: str = "{key}"  # how the key is written in the header, e.g. "Bearer {key}"

    #: the stand-in a CLI sends (and the proxy replaces) when it insists on having a key
    STAND_IN = "toren-key-proxy"


KEY_RELAY_PORT = 3129


@dataclass
class Usage:
    """What an agent run used, as parsed from its stream."""

    model: str | None = None
    turns: int = 0
    tool_calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: The CLI's own cost figure when it reports one (Claude Code does), else None.
    reported_cost_usd: float | None = None
    #: True when the vendor counts cached tokens inside input_tokens (OpenAI, Gemini); False when it reports
    #: them apart (Anthropic).
    cache_read_in_input: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Verdict:
    """A condition that ends the run: ``kind`` is auth, rate_limit, max_turns, budget or error."""

    kind: str
    message: str


def api_verdict(status: int | None, message: str, cli: str, auth: bool = False, busy: bool = False) -> Verdict:
    """How an API error the CLI gave up on ends the job: a rejected key (401/403, or ``auth`` when the vendor
    says so another way), a rate limit or overload (429, 5xx, or ``busy``), or any other error."""
    text = " ".join(message.split())[:300]
    if auth or status in (401, 403):
        return Verdict("auth", f"the model API refused the credentials (HTTP {status})")
    if busy or status == 429 or (status or 0) >= 500:
        return Verdict("rate_limit", f"the model API kept failing (HTTP {status}): {text}")
    return Verdict("error", f"{cli} reported an error: {text}")


class StreamParser:
    """Feeds on the CLI's output one line at a time. Subclasses parse their vendor's JSON events."""

    #: True when the vendor counts cached tokens inside input_tokens (OpenAI, Gemini).
    cache_read_in_input = False

    def __init__(self) -> None:
        self.usage = Usage(cache_read_in_input=self.cache_read_in_input)
        #: Set when the stream shows a condition that should stop the run now (a bad key).
        self.stop: Verdict | None = None
        #: Set when the stream shows how the run ended (max turns, an error result).
        self.verdict: Verdict | None = None
        #: Structured events kept with the job: tool calls, errors, retries, the final result.
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.final_text: str | None = None
        #: Set once the CLI has reported its final result (no budget stop after that).
        self.finished = False
        #: The CLI's session id, when it reports one (a later review round may resume it); a UUID or None.
        self.session_id: str | None = None

    def feed(self, line: str) -> list[str]:
        """Readable log lines for one line of output (none hides it)."""
        line = line.rstrip()
        if not line.strip():
            return []
        if not line.lstrip().startswith("{"):
            return [line]
        try:
            event = json.loads(line)
        except ValueError:
            return [line]
        if not isinstance(event, dict):
            return [line]
        try:
            shown = self.on_event(event)
        except Exception:  # noqa: BLE001 - an event shape we do not know must not stop the log
            return [line]
        return [line] if shown is None else shown

    def on_event(self, event: dict[str, Any]) -> list[str] | None:
        """Readable lines for one JSON event; None shows the line as it came."""
        return None

    # helpers for subclasses
    def tool(self, name: str, args: Any) -> str:
        self.usage.tool_calls += 1
        arg = main_argument(args)
        self.events.append(("tool", {"name": name, "arg": arg[:300]}))
        return f"→ {name}" + (f" {arg}" if arg else "")

    def error(self, text: str, **data: Any) -> str:
        self.usage.errors += 1
        self.events.append(("error", {"message": text[:500], **data}))
        return f"✗ {text}"


class AgentProfile:
    name: str = ""
    #: npm package and pinned version, or "" for a profile that installs nothing.
    package: str = ""
    version: str = ""
    #: Docker network used when the user gives none.
    default_network: str = "bridge"
    #: True when the profile runs the user's --command.
    takes_command: bool = False
    #: True when the CLI is a Node program (it needs the Node runtime on PATH when it runs).
    node_runtime: bool = False
    #: Ways to authenticate, in order of preference; one is enough.
    credentials: tuple[Credential, ...] = ()
    #: Host variables passed through when set (base URLs for gateways and proxies; never secrets).
    passthrough_env: tuple[str, ...] = ()
    #: Model used when --model is not given (for the price table; the CLI picks its own when None).
    default_model: str | None = None
    #: Whether the CLI enforces --max-turns itself (otherwise Toren counts turns and stops the container).
    enforces_max_turns: bool = False
    #: Set when the CLI can reach its API through Toren's key proxy (the key then never enters the container).
    key_proxy: KeyProxySpec | None = None
    #: Whether its stream reports tokens as it goes (so Toren can stop it on cost), and whether it reports
    #: its own cost figure.
    meters_live: bool = True
    reports_cost: bool = False
    #: The CLI keeps a session that a later run can resume (``--resume SESSION``), in RunContext.session_dir.
    resumes_sessions: bool = False

    def __init__(self, version: str | None = None) -> None:
        if version:
            self.version = version

    def credentials_present(self, environ: dict[str, str], home_dir: str) -> list[str]:
        """Where this machine has credentials for the CLI (variable or file names, never values)."""
        import os

        found = []
        for cred in self.credentials:
            if environ.get(cred.name):
                found.append(cred.name)
            if cred.file_var and environ.get(cred.file_var) and os.path.isfile(environ[cred.file_var]):
                found.append(f"{cred.file_var} ({environ[cred.file_var]})")
            if cred.default_file and os.path.isfile(cred.default_file.replace("~", home_dir, 1)):
                found.append(cred.default_file)
        return found

    def install_layer(self) -> str:
        """Dockerfile lines (run as root) that install the CLI; part of the image's content hash."""
        if not self.package:
            return ""
        return (
            f"RUN {NODE_PREFIX}/bin/npm install --global --prefix {CLI_PREFIX} --no-fund --no-audit "
            f"--loglevel=error {self.package}@{self.version} && {self.post_install()}"
            f"{CLI_PREFIX}/bin/{self.executable()} --version"
        )

    def post_install(self) -> str:
        """Shell commands (each ending in ``&& ``) run after npm install, before the version check."""
        return ""

    def executable(self) -> str:
        return self.name

    def command(self, ctx: RunContext) -> list[str]:
        raise NotImplementedError

    def environment(self, ctx: RunContext) -> dict[str, str]:
        """Non-secret environment for the CLI (switches that stop telemetry and update checks)."""
        return self.stand_in_environment(ctx)

    def stand_in_environment(self, ctx: RunContext) -> dict[str, str]:
        """Behind the key proxy's loopback relay the CLI holds only a stand-in for its key, which the proxy
        replaces on the host."""
        spec = self.key_proxy
        if ctx.key_proxy and spec is not None and spec.socket_env is None:
            return {spec.credential: KeyProxySpec.STAND_IN}
        return {}

    def secret_environment(self, ctx: RunContext) -> dict[str, str]:
        """Variables the launcher fills from secret files just before it starts the CLI: {VAR: file name}.
        They live only in the CLI's process, never in the container's configuration. By default the profile's
        API key, unless the key proxy holds it."""
        if self.key_proxy is None or ctx.key_proxy:
            return {}
        return {self.key_proxy.credential: self.key_proxy.credential}

    def task_files(self, ctx: RunContext) -> dict[str, str]:
        """Extra files for the read-only task directory (settings the repository must not override)."""
        return {}

    def exit_verdict(self, exit_code: int) -> Verdict | None:
        """How a non-zero exit code the stream did not explain ends the job (None: the agent failed)."""
        return None

    def parser(self) -> StreamParser:
        return StreamParser()


def main_argument(args: Any) -> str:
    """The one argument of a tool call worth showing: the command, the path, the pattern."""
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return _one_line(args)
    if not isinstance(args, dict):
        return _one_line(json.dumps(args)) if args else ""
    for key in ("command", "cmd", "file_path", "absolute_path", "path", "filePath", "pattern", "url", "query",
                "description", "prompt"):
        if key in args and args[key]:
            value = args[key]
            return _one_line(" ".join(value) if isinstance(value, list) else str(value))
    return _one_line(json.dumps(args)) if args else ""


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: The container's entry: export the named secret files as variables for the CLI's process only, put the
#: prompt file's text where the command line has PROMPT_ARG, then exec the CLI (no shell stays around).
LAUNCHER = r"""set -e
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  value=$(cat "$TOREN_SECRETS_DIR/${1#*=}") || { echo "toren: cannot read secret ${1#*=}" >&2; exit 97; }
  export "${1%%=*}=$value"
  shift
done
shift
prompt=$(cat "$TOREN_TASK_FILE")
for a in "$@"; do shift; if [ "$a" = "@TOREN_PROMPT@" ]; then set -- "$@" "$prompt"; else set -- "$@" "$a"; fi; done
exec "$@"
"""


def launch_command(argv: list[str], secret_env: dict[str, str]) -> list[str]:
    return ["/bin/sh", "-c", LAUNCHER, "toren-launch", *(f"{var}={name}" for var, name in secret_env.items()), "--",
            *argv]
