"""Settings from the environment: the Nexus design's deployment variables work as they are."""

from __future__ import annotations

from crdt_state.config import Settings


def test_redis_by_host_and_port_as_the_design_deploys_it() -> None:
    settings = Settings.from_env({"REDIS_HOST": "redis", "REDIS_PORT": "6380"})
    assert settings.redis_url == "redis://redis:6380/0"
    assert Settings.from_env({"REDIS_HOST": "redis"}).redis_url == "redis://redis:6379/0"


def test_redis_url_wins_over_host_and_port() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://cache:1/2", "REDIS_HOST": "redis"})
    assert settings.redis_url == "redis://cache:1/2"
    assert Settings.from_env({}).redis_url is None
