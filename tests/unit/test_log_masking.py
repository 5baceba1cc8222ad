"""Masking credentials in quoted log lines (report, post-mortem) and in Slack messages:
a URL's password is masked whether or not the URL names a user."""

from __future__ import annotations

import pytest

from migration_soak import notify
from migration_soak.sources.logs import mask


def test_log_samples_mask_a_url_password_without_a_user_name():
    """Deciding log lines are quoted in the post-mortem (sources.logs.mask); the URL rule
    needed a non-empty user, so redis://:<password>@host (Redis' usual form) leaked."""
    line = "2026-12-06T01:24:20Z CRITICAL cache down: redis://:s3cr3t-redis-pw@redis:6379/0 refused"
    assert "s3cr3t-redis-pw" not in mask(line), mask(line)
    assert mask(line) == "2026-12-06T01:24:20Z CRITICAL cache down: redis://:***@redis:6379/0 refused"


@pytest.mark.parametrize("url, shown", [
    ("postgres://app:s3cret@db:5432/staging", "postgres://app:***@db:5432/staging"),
    ("rediss://:s3cret@cache:6380", "rediss://:***@cache:6380"),
    ("postgres://app:ab/cd@db/x", "postgres://app:***@db/x"),  # a "/" in the password
    ("amqp://app:p@ss@mq:5672/", "amqp://app:***@mq:5672/"),  # an unencoded "@" in it
])
def test_a_url_password_is_masked_whatever_it_holds(url, shown):
    assert mask(f"ERROR connect {url} refused") == f"ERROR connect {shown} refused"


def test_urls_without_a_password_are_left_alone():
    line = "GET https://example.com/a/b from http://h:80/x, redis://:@cache:6379 (no password)"
    assert mask(line) == line


def test_slack_messages_mask_a_url_password_airflow_does_not_know():
    """notify.on_task_failure quotes an exception's first line; Airflow's masker only knows
    the passwords of the connections it loaded."""
    text = notify._mask("Reason: ConnectionError: redis://:s3cr3t-redis-pw@redis:6379/0 refused")
    assert "s3cr3t-redis-pw" not in text and "redis://:***@redis:6379/0" in text
