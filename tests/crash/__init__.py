"""Crash tests: real service processes killed with SIGKILL at seeded random points, restarted on
the same database, then checked for lost, repeated or half-done work."""
