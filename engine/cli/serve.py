"""``rlm serve``: the command is defined by the service (:mod:`engine.service.command`), which
``python -m engine.service`` runs too; the CLI only lists it."""

from engine.service.command import add_model_flags, handle, register

__all__ = ["add_model_flags", "handle", "register"]
