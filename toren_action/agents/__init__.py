"""Agent profiles: what each coding CLI needs in the image, on its command line and from the host.
Imports only config and core."""

from __future__ import annotations

from importlib import import_module

from toren_action.agents.base import AgentProfile
from toren_action.core.errors import UsageError

#: name -> "module:Class". A new CLI is one more line here and one module.
PROFILES = {
    "claude": "toren_action.agents.claude:ClaudeProfile",
    "gemini": "toren_action.agents.gemini:GeminiProfile",
    "codex": "toren_action.agents.codex:CodexProfile",
    "qwen": "toren_action.agents.qwen:QwenProfile",
    "shell": "toren_action.agents.shell:ShellProfile",
}
KNOWN_AGENTS = tuple(PROFILES)


def get_profile(name: str, version: str | None = None) -> AgentProfile:
    if name not in PROFILES:
        raise UsageError("--agent", f"unknown agent {name!r}; choose one of {', '.join(KNOWN_AGENTS)}")
    module, cls = PROFILES[name].split(":")
    try:
        profile_class = getattr(import_module(module), cls)
    except ModuleNotFoundError:
        raise UsageError("--agent", f"the {name} profile is not available in this version of Toren yet; "
                                    "use --agent claude or --agent shell") from None
    if version and not profile_class.package:
        raise UsageError("--agent-version", f"the {name} agent installs nothing; drop --agent-version")
    return profile_class(version)
