"""
The live dashboard: ``GET /`` on the API's endpoint (``--api-listen``).

The page is three static files shipped in the package (``static/``: HTML, CSS, JavaScript; no
build step, nothing loaded from anywhere but this server) and needs no token to be fetched: it
holds no data. Everything it shows it asks the API for, with the operator's bearer token, which
the page asks for once and keeps in the browser's ``sessionStorage`` (gone when the tab closes):
the totals and the channels from ``/v1/info`` and ``/v1/channels``, then every channel event from
``/v1/events``. A browser's ``EventSource`` cannot send the ``Authorization`` header, so the page
reads the event stream with ``fetch()`` and parses the server-sent events itself, resuming
with ``Last-Event-ID`` after a disconnection (the token never goes into a URL, where access
logs and proxies would keep it).

:class:`DashboardResource` serves the files by name from a fixed list (no path from the request
reaches the file system), with a Content-Security-Policy that lets the page talk to this server
only.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = ["DashboardResource", "dashboard_resources", "FILES"]

#: URL path -> (file in ``static/``, content type).
FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/style.css": ("style.css", "text/css; charset=utf-8"),
}

#: Nothing from elsewhere: scripts, styles, images and connections to this origin only.
_POLICY: Final = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                  b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _read(name: str) -> bytes:
    return (resources.files(__name__) / "static" / name).read_bytes()


class DashboardResource(Resource):
    """The dashboard's files, read once from the package."""

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        self._files = {path: (_read(name), kind) for path, (name, kind) in FILES.items()}

    def render_GET(self, request: Request) -> bytes:
        path = (request.path or b"/").decode("utf-8", "replace")
        found = self._files.get(path)
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        body, kind = found
        request.setHeader(b"content-type", kind.encode())
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-security-policy", _POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return body

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)


def dashboard_resources() -> dict[bytes, Resource]:
    """The API's ``extra`` top-level names: ``/`` and ``/dashboard/...``."""
    page = DashboardResource()
    return {b"": page, b"dashboard": page}
