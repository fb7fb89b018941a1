"""The cabinet's files: served at / and /cabinet/ with a strict content security policy, kept out
of the OpenAPI document, and every string in both languages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway.app import close, create_app
from gateway.cabinet import STATIC
from tests.integration.gateway_support import gateway_settings


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(gateway_settings({}))
    try:
        with TestClient(app) as client:
            yield client
    finally:
        close(app)


def test_the_page_and_its_files_are_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="token-form"' in page.text
    for path, kind in (("/cabinet/cabinet.js", "javascript"), ("/cabinet/i18n.js", "javascript"),
                       ("/cabinet/cabinet.css", "text/css")):  # fmt: skip
        asset = client.get(path)
        assert asset.status_code == 200 and kind in asset.headers["content-type"], path
        assert asset.headers["x-content-type-options"] == "nosniff"
    for answer in (page, client.get("/cabinet/cabinet.js")):
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy
    assert "/" not in client.get("/openapi.json").json()["paths"]
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["reason"] == "ROUTE_NOT_FOUND"
    assert client.get("/cabinet/../gateway/app.py").status_code == 404


def dictionaries() -> dict[str, dict[str, str]]:
    """STRINGS from i18n.js (a JavaScript object literal, read as JSON after quoting the keys)."""
    source = (STATIC / "i18n.js").read_text(encoding="utf-8")
    literal = source[source.index("= {") + 2 : source.rindex("}") + 1]
    literal = re.sub(r"^(\s*)([A-Za-z]\w*):", r'\1"\2":', literal, flags=re.MULTILINE)
    literal = re.sub(r",(\s*})", r"\1", literal)
    value: dict[str, dict[str, str]] = json.loads(literal)
    return value


def test_every_string_is_in_both_languages() -> None:
    strings = dictionaries()
    assert set(strings) == {"en", "ru"}
    assert set(strings["en"]) == set(strings["ru"]), set(strings["en"]) ^ set(strings["ru"])
    used = set(re.findall(r'data-i18n="([^"]+)"', (STATIC / "index.html").read_text(encoding="utf-8")))
    used |= set(re.findall(r'\bt\("([^"]+)"', (STATIC / "cabinet.js").read_text(encoding="utf-8")))
    assert used <= set(strings["en"]), used - set(strings["en"])
    for language in ("en", "ru"):  # the placeholders match across the languages
        for key, text in strings[language].items():
            assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", strings["en"][key])), key
