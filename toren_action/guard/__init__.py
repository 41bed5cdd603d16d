"""What judges the agent's change and images: the diff policy, the code scan, `toren scan` and the image scan.
Imports git, sandbox, config and core."""
