"""Forkserver preload for worker processes of a node that cleans burned-in text.

Everything pixel work needs is imported once here, before the workers are forked, so its
pages are shared between them: numpy, pydicom's pixel handlers and their plugins, Pillow
and tesserocr (each worker starts its own Tesseract engine on its first object).
"""

import deid_node.pixels.release
import deid_node.runtime.worker  # noqa: F401
