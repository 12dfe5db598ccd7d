"""crdt-state: a collaborative state server (Yjs over WebSocket, JSON over REST)."""

__version__ = "0.1.0"
