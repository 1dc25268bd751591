"""The fuzzer behind scripts/fuzz.py: malformed objects over real associations to a node.

Objects (generator: encoding, draft, structure and values mutations) are sent untouched
(sender) to our own `deid-node serve` or another node (node, target); what the node left
behind (records, phi) is joined into a report with invariants (report); run ties it up.
"""

from deid_node.testing.fuzz.generator import KINDS, FuzzObject, Generator
from deid_node.testing.fuzz.run import FuzzOptions, run
from deid_node.testing.fuzz.sender import is_contract_failure, is_success

__all__ = [
    "KINDS",
    "FuzzObject",
    "FuzzOptions",
    "Generator",
    "is_contract_failure",
    "is_success",
    "run",
]
