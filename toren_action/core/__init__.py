"""The base every layer may use: errors with exit codes, the state directory's paths, redaction and the
texts that leave Toren. Imports nothing else of Toren."""
