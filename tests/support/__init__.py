"""Helpers for tests that run the real service: processes, vhosts, payloads, waiting."""
