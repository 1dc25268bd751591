"""Tooling for tests/ and scripts/: synthetic data, the fuzzer, a node's audit read from outside.

Nothing in the node imports this package (tests/testing/test_package.py checks it).
"""
