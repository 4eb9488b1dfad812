"""The duty console: one static page and its assets, served from the package (no build
step)."""

from importlib import resources

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from gateway.blocking import blocking

__all__ = ["router", "static_files"]

router = APIRouter()

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _page() -> str:
    return resources.files("gateway").joinpath("static/console.html").read_text("utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def console() -> Response:
    return HTMLResponse(await blocking(_page), headers=SECURITY_HEADERS)


def static_files() -> StaticFiles:
    """``/static``: the console's JS, CSS and sounds (Starlette reads them off the loop)."""
    return StaticFiles(directory=str(resources.files("gateway") / "static"))
