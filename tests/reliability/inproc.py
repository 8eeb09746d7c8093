"""Run a module's main() in this process with given arguments, the way AnsiballZ would, and read its JSON answer.

Fast enough for hundreds of bad-input cases. An exception escaping main() is exactly what an operator would see as
a MODULE FAILURE traceback, so it is returned as such instead of being raised.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import traceback
from typing import Any
from unittest import mock

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

PACKAGE = "ansible_collections.keyops.runbooks.plugins.modules"


class _SpecSeen(Exception):
    pass


def argument_spec(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The module's argument_spec and the other AnsibleModule keywords, read by stopping its constructor."""
    module = importlib.import_module(f"{PACKAGE}.{name}")
    seen: dict[str, Any] = {}

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        if args:
            seen["argument_spec"] = args[0]
        raise _SpecSeen

    with (
        mock.patch.object(basic.AnsibleModule, "__init__", record),
        patch_module_args({}),
        contextlib.suppress(_SpecSeen),
    ):
        module.main()
    spec = seen.pop("argument_spec")
    return spec, seen


def call(name: str, args: dict[str, Any], check_mode: bool = False) -> tuple[dict[str, Any], str | None]:
    """(the module's JSON result, the traceback text if an exception escaped main())."""
    module = importlib.import_module(f"{PACKAGE}.{name}")
    stdout = io.StringIO()
    arguments = dict(args, _ansible_check_mode=check_mode, _ansible_tmpdir=None)
    failure = None
    with patch_module_args(arguments), contextlib.redirect_stdout(stdout):
        try:
            module.main()
        except SystemExit:
            pass
        except BaseException:
            failure = traceback.format_exc()
    text = stdout.getvalue().strip()
    try:
        result = json.loads(text[text.index("{") :]) if "{" in text else {}
    except ValueError:
        result = {"unparsed": text}
    return result, failure
