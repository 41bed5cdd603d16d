"""Fake model servers the tests own: each speaks one vendor's streaming API on 127.0.0.1 and follows a script
(one tool call that writes a file, then a final answer), so the real CLIs can run end to end offline."""
