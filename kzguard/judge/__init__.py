"""Judging, and only judging: facts and configuration in, verdicts, decisions and the text
that explains them out. Nothing here reads a file, runs a command or changes the host."""
