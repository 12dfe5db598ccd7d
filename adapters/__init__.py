"""Implementations of the ports in crdt_state.ports (storage, fan-out)."""
