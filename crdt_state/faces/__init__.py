"""The faces of the server: REST (rest.py, snapshots.py, health.py), the Yjs WebSocket
(yjs_socket.py) and the JSON WebSocket (state_socket.py). Each parses and authorizes what it
receives and calls the core (the panel service, the rooms); none imports another. What they
share is in http.py (request parsing, idempotency, errors) and context.py (what they reach)."""
