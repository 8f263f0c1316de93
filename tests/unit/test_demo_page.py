"""The demo page's files: served with the right types, open without the API key, nothing external.

Runs the real app factory (no lifespan: these routes need no runtime) on an ASGI client. The
browser itself is exercised in tests/e2e/test_demo_page.py.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core.config import load_settings
from core.context import GlobalContext, Paths
from core.gateway.app import create_app
from core.gateway.routes import demo

ROOT = Path(__file__).resolve().parents[2]
STATIC = demo.STATIC_DIR
KEY = "demo-test-key"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # an XML namespace name, never fetched


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("UV_API_KEY", KEY)
    settings = load_settings(ROOT / "config", env={})
    paths = Paths(root=ROOT, var=tmp_path / "var", cache=tmp_path / "cache", venvs=tmp_path / "venvs")
    app = create_app(GlobalContext.create(settings, paths))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as c:
        yield c


def static_files() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*") if p.is_file())


def test_the_static_folder_ships_inside_the_package() -> None:
    packaged = importlib.resources.files("core.gateway") / "static"
    assert Path(str(packaged)) == STATIC
    names = {p.name for p in static_files()}
    assert {"index.html", "app.js", "style.css", "worklets.js", "favicon.svg"} <= names
    assert all(p.suffix in demo.MEDIA_TYPES for p in static_files()), "a file type the route would not serve"


async def test_the_page_and_every_static_file_are_served_with_their_type_without_a_key(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/static/app.js">' in page.text
    for path in static_files():
        r = await client.get(f"/static/{path.relative_to(STATIC).as_posix()}")
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith(TYPES[path.suffix]), (path, r.headers["content-type"])
        assert r.content == path.read_bytes()
    icon = await client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert (await client.get("/api/agents")).status_code == 401, "the API itself still needs the key"


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/static/nope.js", "a missing file"),
        ("/static/%2e%2e/routes/demo.py", "a path out of the static folder"),
        ("/static/..%2fapp.py", "an encoded path out of the static folder"),
        ("/static/index.htm", "an unknown type"),
        ("/static/", "the folder itself"),
        ("/static/a%00b.js", "a NUL byte in the name"),
        (f"/static/{'a' * 5000}.js", "a name too long for the file system"),
    ],
)
async def test_anything_else_under_static_is_a_404_that_says_where_the_page_is(
    client: httpx.AsyncClient, path: str, why: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 404, why
    assert "the demo page is at /" in r.json()["error"]["message"], why


def test_nothing_on_the_page_points_outside_this_origin() -> None:
    for path in static_files():
        text = path.read_text()
        urls = [u for u in re.findall(r"(?:https?|wss?):/{2}[^\s\"'`)<>]*", text) if u != SVG_NAMESPACE]
        assert not urls, f"{path.name} refers to {urls}: the page must load nothing from the internet"
        assert not re.search(r"""(?:src|href)\s*=\s*["']//""", text), f"{path.name}: protocol-relative URL"
        assert "@import" not in text and "url(" not in text, f"{path.name}: CSS that fetches"
        for spec in re.findall(r"""^\s*import\b[^"']*["']([^"']+)["']""", text, re.MULTILINE):
            assert spec.startswith("./"), f"{path.name} imports {spec!r}: only the page's own modules"


def test_every_element_the_scripts_use_is_on_the_page() -> None:
    html = (STATIC / "index.html").read_text()
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    for path in STATIC.glob("*.js"):
        used = set(re.findall(r"""\$\(["']([\w-]+)["']\)""", path.read_text()))
        assert used <= ids, f"{path.name} uses ids missing from index.html: {sorted(used - ids)}"
