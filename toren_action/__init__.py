"""Toren: hand coding work to an AI agent in a container, get back a branch and a pull request."""

__version__ = "0.1.0"
