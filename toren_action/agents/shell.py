"""The built-in deterministic agent: runs the user's --command with /bin/sh -c. Needs no key or network."""

from __future__ import annotations

from toren_action.agents.base import AgentProfile, RunContext


class ShellProfile(AgentProfile):
    name = "shell"
    default_network = "none"
    takes_command = True

    def command(self, ctx: RunContext) -> list[str]:
        assert ctx.command, "validated before the job starts"
        return ["/bin/sh", "-c", ctx.command]
