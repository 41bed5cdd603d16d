"""Many jobs over time: the SQLite store and the background worker.
Imports sandbox, config and core."""
