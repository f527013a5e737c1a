"""Host-side preparation of contexts: what the user has becomes text the sandbox can load.

``ContextSpec`` names files, folders and standard input; :func:`prepare_context` turns it
into a text file or a folder of text files (``.gitignore`` honoured, binary files and
outside symlinks skipped, PDF/DOCX/HTML converted) with a :class:`Manifest` of what was
included and skipped. The CLI, the :class:`engine.Engine` and the service all go through it.
"""

from engine.contexts.extract import Extracted, document_kind, extract_text
from engine.contexts.manifest import Manifest
from engine.contexts.prepare import (
    STDIN_KEY,
    ContextSpec,
    PreparedContext,
    Source,
    prepare_context,
)
from engine.contexts.sources import read_stdin

__all__ = [
    "STDIN_KEY",
    "ContextSpec",
    "Extracted",
    "Manifest",
    "PreparedContext",
    "Source",
    "document_kind",
    "extract_text",
    "prepare_context",
    "read_stdin",
]
