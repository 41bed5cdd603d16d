"""The contract of an agent profile. A new coding CLI is one new subclass."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunContext:
    """What a profile may use to build its command line (all paths are inside the container)."""

    prompt_file: str
    model: str | None
    command: str | None
    secrets_dir: str


class AgentProfile:
    name: str = ""
    #: npm package and pinned version, or "" for a profile that installs nothing.
    package: str = ""
    version: str = ""
    #: Docker network used when the user gives none.
    default_network: str = "bridge"
    #: True when the profile runs the user's --command.
    takes_command: bool = False

    def install_layer(self) -> str:
        """Dockerfile lines (run as root) that install the CLI; part of the image's content hash."""
        return ""

    def command(self, ctx: RunContext) -> list[str]:
        raise NotImplementedError

    def environment(self, ctx: RunContext) -> dict[str, str]:
        """Non-secret environment for the CLI (switches that stop telemetry and update checks)."""
        return {}

    def format_line(self, line: str) -> str | None:
        """Turn one line of the CLI's output into a readable log line (None hides it)."""
        return line
