"""Tooling for the tests and scripts/: synthetic data and the fuzzer; never imported by the node."""
