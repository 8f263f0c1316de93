"""The browser demo page at ``/`` and its static files (no build step, no CDN).

The files live in ``core/gateway/static`` next to this package, so they ship in the wheel and
resolve the same way in an editable install. Only files inside that folder with a known type are
served; anything else is a 404. The page gets a Content-Security-Policy that lets it load and
connect to this origin only, so a stray external URL fails loudly in the browser instead of
silently reaching the internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob: mediastream:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _file(path: Path) -> FileResponse:
    headers = dict(_HEADERS)
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)


def _not_found(name: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "NOT_FOUND", "message": f"no static file {name!r}; the demo page is at /"}},
        status_code=404,
    )


@router.get("/")
async def index() -> FileResponse:
    return _file(STATIC_DIR / "index.html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    return _file(STATIC_DIR / "favicon.svg")


@router.get("/static/{name:path}", response_model=None)
async def static(name: str) -> FileResponse | JSONResponse:
    try:
        path = (STATIC_DIR / name).resolve()
        found = path.is_relative_to(STATIC_DIR) and path.suffix in MEDIA_TYPES and path.is_file()
    except (ValueError, OSError):  # a NUL byte, a name too long for the file system: no such file either
        found = False
    if not found:
        return _not_found(name)
    return _file(path)
