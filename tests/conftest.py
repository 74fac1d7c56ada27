"""Shared fixtures: a private PostgreSQL and Redis per test session (per xdist worker under
`make test`), started only when asked for."""

from __future__ import annotations

import itertools

import pytest

from tests.harness.services import PostgresServer, RedisServer

_db_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.remove()


@pytest.fixture
def pg_url(postgres_server):
    """A fresh, empty PostgreSQL database for one test."""
    return postgres_server.create_database(f"t{next(_db_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Run a store test against both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sidecar.db"
    return request.getfixturevalue("pg_url")
