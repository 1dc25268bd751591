"""Helpers the tests share, one module per concern; fixtures stay in tests/conftest.py.

Test modules import helpers from here (or from deid_node.testing), never from each other.
"""
