# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Domain errors raised below ``main()``.

Every failure message has one form: what failed, for which key, why, and what
fixes it. ``_module.run_module`` is the only place that turns these into
``fail_json``.
"""

from __future__ import annotations

from typing import Any


class KeyopsError(Exception):
    """A failure an operator can act on."""

    def __init__(
        self, action: str, key_ref: str | None = None, reason: str = "", remedy: str | None = None, **details: Any
    ) -> None:
        self.action = action
        self.key_ref = key_ref
        self.reason = reason
        self.remedy = remedy
        self.details = details
        super().__init__(self.message)

    @property
    def message(self) -> str:
        target = f" for key '{self.key_ref}'" if self.key_ref else ""
        text = f"{self.action} failed{target}: {self.reason}"
        if self.remedy:
            text += f". {self.remedy}"
        return text


class InvalidInput(KeyopsError):
    """An option value that can never work."""


class KeyNotFound(KeyopsError):
    """The named key does not exist where it was looked for."""


class AccessDenied(KeyopsError):
    """The backend refused the caller's credentials for this operation."""


class BackendUnavailable(KeyopsError):
    """The backend could not be reached, is sealed, or answered with a server error."""


class PolicyViolation(KeyopsError):
    """The request breaks the key-management policy in force."""


class Conflict(KeyopsError):
    """The request clashes with the current state (duplicate match, lock held, data still depends on it)."""


class IntegrityError(KeyopsError):
    """A verification failed: a digest, a signature, a chain, a known-answer test."""


class MissingLibrary(KeyopsError):
    """A Python library the operation needs is not installed on the host running the module."""

    def __init__(self, library: str, import_traceback: str | None = None) -> None:
        super().__init__(
            "Import",
            None,
            f"the Python library '{library}' is not installed",
            f"Install it on the host that runs the module (pip install {library})",
        )
        self.library = library
        self.import_traceback = import_traceback
