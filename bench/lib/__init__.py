"""Shared pieces of bench/bench.py (the issue-8 suite) and bench/duel.py (same-window duels):
processes (procs), load generators (load), proxies and their configs (peers)."""
