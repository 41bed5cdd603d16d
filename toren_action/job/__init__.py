"""The path of one job: plan, run, report.
Imports every layer below it (jobs, guard, git, sandbox, agents, config, core)."""
