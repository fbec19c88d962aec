"""Running ``paychan`` in-process (``main(argv)`` with captured output) for the CLI tests."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from twisted_paychan.cli.main import main


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def paychan(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


def ok(*argv: str) -> Result:
    result = paychan(*argv)
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result
