"""The panel routes' own lane: `/api/state/{workspace}/{panel}` (GET, HEAD, PUT, PATCH,
DELETE) and the routes below it (`/history`, `/revert`, `/presence`) served without
Starlette's router and error middlewares.

Those are most of the server's HTTP requests. Starlette tries the app's routes one by one (14
patterns for a PATCH) and passes each request, and each message of its answer, through four
layers of error handling; the lane finds the handler with one split of the path and calls it
with the same Request. Its errors meet the app's own handlers, looked up the way Starlette
does (by the error's class, most specific first): a StateError becomes its JSON answer; an
error no handler but `Exception`'s takes is answered 500 and raised on, for the server's log,
as Starlette's outermost middleware does.

Everything else goes through Starlette as before: other paths, a path that another route
under `/api/state/{workspace}/` could take (`.../snapshot`, `.../snapshot/status`, `.../restore`,
`.../context`: read off the routes, not listed here), a method the panel routes do not take
(Starlette answers 405), an app served under a root path. The routes stay in the app's list,
where OpenAPI and introspection read them.
"""

from __future__ import annotations

import inspect
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
        # (method, what follows the panel id: "" or one literal segment) -> route
        self.routes: dict[tuple[str, str], Route] = {}
        # What other routes under a workspace take, segment by segment after the workspace
        # ("*": a parameter): ("snapshot",), ("snapshot", "status"), ... A request that one of
        # them could take goes through Starlette, which knows their order.
        self.reserved: set[tuple[str, ...]] = set()
        for route in routes:
            if not isinstance(route, Route):
                continue
            tail = route.path.removeprefix(PANEL_PATH)
            below = tail == "" or (tail[:1] == "/" and "/" not in tail[1:] and "{" not in tail)
            if below and inspect.iscoroutinefunction(route.endpoint):  # a `request -> answer`
                for method in route.methods or ():
                    self.routes.setdefault((method, tail[1:]), route)
                continue
            if route.path.startswith(PREFIX + "{workspace}/"):
                segments = route.path.split("/")[4:]
                self.reserved.add(tuple("*" if "{" in s else s for s in segments))
        self.patterns = [taken for taken in self.reserved if "*" in taken]

    def route(self, scope: Scope) -> tuple[Route, dict[str, str]] | None:
        """The panel route and path parameters of an HTTP request, or None (Starlette's)."""
        path: str = scope["path"]
        if not path.startswith(PREFIX) or scope.get("root_path"):
            return None
        parts = path[len(PREFIX) :].split("/")
        if len(parts) == 2:
            tail = ""
        elif len(parts) == 3 and parts[2]:
            tail = parts[2]
        else:
            return None
        workspace, panel = parts[0], parts[1]
        if not workspace or not panel or self._reserved(parts[1:]):
            return None
        route = self.routes.get((scope["method"], tail))
        if route is None:
            return None
        return route, {"workspace": workspace, "panel": panel}

    def _reserved(self, segments: list[str]) -> bool:
        if tuple(segments) in self.reserved:
            return True
        return any(
            len(taken) == len(segments)
            and all(t in ("*", s) for t, s in zip(taken, segments, strict=True))
            for taken in self.patterns
        )

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
            answer = await self.handlers[cls](request, exc)
            await answer(scope, receive, send)
            if cls is Exception:
                raise  # a fault of the server: answered, and on to the server's log
            exc.__traceback__ = None  # as Starlette: a reused error would grow its traceback
            return
        await response(scope, receive, send)
