"""What logs and messages show of KOTAE_REDIS_URL: never the password."""

from __future__ import annotations

import pytest

from retrieval.redis_state import RedisUnavailable, connect, shown_url


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://kotae:hunter2@redis.example.com:6380/1", "rediss://kotae:***@redis.example.com:6380/1"),
    ("redis://kotae@redis:6379", "redis://kotae@redis:6379"),
    ("redis://redis:6379/0?password=hunter2", "redis://redis:6379/0"),
    ("redis://:p%40ss@redis/0", "redis://:***@redis/0"),
    ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock"),
    ("hunter2", "(not a URL)"),
])
def test_the_password_is_never_shown(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_a_url_that_is_not_redis_is_refused_naming_the_setting() -> None:
    with pytest.raises(RedisUnavailable) as refused:
        connect("http://:hunter2@localhost:6379")
    assert "KOTAE_REDIS_URL=http://:***@localhost:6379" in str(refused.value)
    assert "hunter2" not in str(refused.value)
