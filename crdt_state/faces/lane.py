"""The panel routes' own lane: `/api/state/{workspace}/{panel}` (GET, HEAD, PUT, PATCH,
DELETE) served without Starlette's router and error middlewares.

Those are most of the server's HTTP requests. Starlette tries the app's routes one by one (14
patterns for a PATCH) and passes each request, and each message of its answer, through four
layers of error handling; the lane finds the handler with one split of the path and calls it
with the same Request. Its errors meet the app's own handlers, looked up the way Starlette
does (by the error's class, most specific first): a StateError becomes its JSON answer; an
error no handler but `Exception`'s takes is answered 500 and raised on, for the server's log,
as Starlette's outermost middleware does.

Everything else goes through Starlette as before: other paths, a panel id that is the literal
segment of another route under `/api/state/{workspace}/` (snapshot, restore, context, ...:
read off the routes, not listed here), a method the panel routes do not take (Starlette
answers 405), an app served under a root path. The routes stay in the app's list, where
OpenAPI and introspection read them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..asgi_socket import Receive, Scope, Send

PREFIX = "/api/state/"
PANEL_PATH = PREFIX + "{workspace}/{panel}"

Handler = Callable[[Request, Exception], Awaitable[Response]]


class PanelLane:
    def __init__(
        self,
        starlette: Starlette,
        routes: Iterable[BaseRoute],
        handlers: Mapping[type[Exception], Handler],
    ) -> None:
        self.starlette = starlette
        self.handlers = dict(handlers)
        self.by_method: dict[str, Route] = {}
        self.reserved: set[str] = set()  # literal segments where a panel id would stand
        for route in routes:
            if not isinstance(route, Route):
                continue
            if route.path == PANEL_PATH:
                for method in route.methods or ():
                    self.by_method.setdefault(method, route)
                continue
            segments = route.path.split("/")
            if route.path.startswith(PREFIX + "{workspace}/") and "{" not in segments[4]:
                self.reserved.add(segments[4])

    def route(self, scope: Scope) -> tuple[Route, dict[str, str]] | None:
        """The panel route and path parameters of an HTTP request, or None (Starlette's)."""
        path: str = scope["path"]
        if not path.startswith(PREFIX) or scope.get("root_path"):
            return None
        route = self.by_method.get(scope["method"])
        if route is None:
            return None
        workspace, _, panel = path[len(PREFIX) :].partition("/")
        if not workspace or not panel or "/" in panel or panel in self.reserved:
            return None
        return route, {"workspace": workspace, "panel": panel}

    async def serve(
        self, route: Route, params: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        # What Starlette's app, router and route put in the scope for a handler.
        scope["app"] = self.starlette
        scope["router"] = self.starlette.router
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            cls = next((c for c in type(exc).__mro__ if c in self.handlers), None)
            if cls is None:
                raise
            await (await self.handlers[cls](request, exc))(scope, receive, send)
            if cls is Exception:
                raise  # a fault of the server: answered, and on to the server's log
            exc.__traceback__ = None  # as Starlette: a reused error would grow its traceback
            return
        await response(scope, receive, send)
