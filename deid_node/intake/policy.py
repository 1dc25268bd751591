"""The association policy: which calling AE from which address gets which profile."""

from __future__ import annotations

from dataclasses import dataclass

from deid_node.config import Config
from deid_node.dicom.status import DIAG_CALLED_AE_NOT_RECOGNISED, DIAG_CALLING_AE_NOT_RECOGNISED


def printable(text: str, limit: int = 16) -> str:
    """An AE title or address safe to log: printable ASCII only, bounded length."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text[:limit])
    return clean.strip() or "(empty)"


@dataclass(frozen=True)
class Decision:
    """What to do with an association request: its profile, or a rejection and why."""

    profile: str | None
    reason: str = ""
    diagnostic: int = 0

    @property
    def accepted(self) -> bool:
        """True if the association is to be accepted."""
        return self.profile is not None


def decide(cfg: Config, calling_ae: str, called_ae: str, peer: str) -> Decision:
    """Apply the policy: called AE is ours; calling AE is a source used from its hosts.

    A configured AE title from an address outside its ``hosts`` is rejected even when
    ``[unknown_sources] action`` names a profile: it is a known sender's title misused.
    """
    if called_ae != cfg.node.ae_title:
        return Decision(
            None,
            f"called AE title '{printable(called_ae)}' is not this node's",
            DIAG_CALLED_AE_NOT_RECOGNISED,
        )
    source = cfg.source_for(calling_ae)
    if source is not None:
        if source.allows(peer):
            return Decision(source.profile)
        return Decision(
            None,
            f"calling AE title '{printable(calling_ae)}' is not allowed from {printable(peer, 64)}",
            DIAG_CALLING_AE_NOT_RECOGNISED,
        )
    if cfg.unknown_action != "reject":
        return Decision(cfg.unknown_action)
    return Decision(
        None,
        f"calling AE title '{printable(calling_ae)}' is not a configured source",
        DIAG_CALLING_AE_NOT_RECOGNISED,
    )
