"""Runs one app from docs/migrating-from-advanced-alchemy.md (``python doc_driver.py MODULE``, in the
directory that holds the module and its databases) and prints what each request answered, as JSON."""

from __future__ import annotations

import importlib
import json
import sys

from litestar.testing import TestClient


def main() -> None:
    sys.path.insert(0, ".")
    app = importlib.import_module(sys.argv[1]).app
    answers = []
    with TestClient(app) as client:
        for method, path, body in [
            ("POST", "/notes", {"title": "first"}),
            ("POST", "/notes", {"title": "second"}),
            ("POST", "/notes", {"title": "first"}),
            ("GET", "/notes/1", None),
            ("GET", "/notes/99", None),
        ]:
            response = client.request(method, path, json=body)
            answers.append([method, path, response.status_code, response.json()])
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
