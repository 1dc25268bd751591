"""Tooling for tests/ and scripts/: synthetic data, the fuzzer, a node's audit read from outside.

Nothing in the node imports this package (tests/test_testing_package.py checks it).
"""
