"""Agent profiles: what each coding CLI needs in the image and on its command line."""

from __future__ import annotations

from toren_action.agents.base import AgentProfile
from toren_action.errors import UsageError

#: Profiles by name. The CLIs that need a model API key arrive with their own profiles; `shell` is built in.
KNOWN_AGENTS = ("claude", "gemini", "codex", "qwen", "shell")


def get_profile(name: str) -> AgentProfile:
    if name == "shell":
        from toren_action.agents.shell import ShellProfile

        return ShellProfile()
    if name in KNOWN_AGENTS:
        raise UsageError(
            "--agent", f"the {name} profile is not available in this version of Toren yet; use --agent shell"
        )
    raise UsageError("--agent", f"unknown agent {name!r}; choose one of {', '.join(KNOWN_AGENTS)}")
