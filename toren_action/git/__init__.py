"""git on the host (mirror, clone, commit, push, a commit's tree) and GitHub (API and git credentials).
Imports config and core."""
