# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private helpers shared by the modules' ``main()``: the one place a domain error becomes ``fail_json``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import KeyopsError, MissingLibrary


def run_module(module: AnsibleModule, action: Callable[[AnsibleModule], dict[str, Any]]) -> None:
    """Run ``action`` and exit with its result, or fail with the domain error's message."""
    try:
        result = action(module)
    except MissingLibrary as error:
        module.fail_json(msg=missing_required_lib(error.library), exception=error.import_traceback)
    except KeyopsError as error:
        module.fail_json(msg=error.message, **_safe_details(error))
    module.exit_json(**result)


def _safe_details(error: KeyopsError) -> dict[str, Any]:
    # Details are ids, counts and states chosen by the raiser; the reserved names are Ansible's own.
    reserved = {"msg", "failed", "changed", "exception", "invocation", "warnings", "deprecations"}
    details = {key: value for key, value in error.details.items() if key not in reserved}
    if error.key_ref:
        details.setdefault("key_ref", error.key_ref)
    return details
