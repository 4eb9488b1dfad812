"""Operations: liveness, readiness and Prometheus metrics (public, no data of residents)."""

from collections.abc import Callable

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from gateway import __version__
from gateway.api.context import ApiContext
from gateway.api.deps import Ctx
from gateway.blocking import blocking

__all__ = ["register_gauges", "router"]

router = APIRouter(tags=["operations"])


def register_gauges(ctx: ApiContext) -> None:
    """Driver and device health as Prometheus gauges (computed on scrape)."""
    def devices_in(state: str) -> Callable[[], float]:
        return lambda: ctx.devices.summary().get(state, 0) if ctx.devices else 0

    def ready(comp: str) -> Callable[[], float]:
        return lambda: float(bool(ctx.health().get(comp, {}).get("ready", 0)))

    for state in ("online", "offline", "degraded", "unknown"):
        ctx.metrics.gauge(f"gateway_devices_{state}", devices_in(state),
                          f"configured devices whose health is {state}")
    for comp in ("mqtt", "store", "rules"):
        ctx.metrics.gauge(f"gateway_component_ready_{comp}", ready(comp),
                          f"1 while the {comp} component is ready")


# The component states and the gauges read the store (outbox counts, free disk space):
# blocking work, so all three run on gateway.blocking's threads.

@router.get("/healthz")
async def healthz(ctx: Ctx) -> dict:
    """Liveness and component states; 200 while the process serves requests."""
    return {"status": "ok", "version": __version__, "components": await blocking(ctx.health)}


@router.get("/readyz")
async def readyz(response: Response, ctx: Ctx) -> dict:
    """503 until intake, store and rules are up (what a load balancer should wait for)."""
    comps = await blocking(ctx.health)
    ready = all(c.get("ready", True) for c in comps.values())
    response.status_code = 200 if ready else 503
    return {"ready": ready, "components": comps}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(ctx: Ctx) -> str:
    """Prometheus text format."""
    return await blocking(ctx.metrics.render)
