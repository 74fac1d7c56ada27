"""Shared fixtures: a private PostgreSQL and Redis per test session (per xdist worker), started
only when asked for; and how `make test` spreads the test files over pytest-xdist workers."""

from __future__ import annotations

import itertools

import pytest

from tests.harness.services import PostgresServer, RedisServer

_db_names = itertools.count()

# Test files that change the host itself (system users; booted containers sharing one cached root)
# run one after the other on one worker; every other file is a unit of its own.
HOST_WIDE = {
    "test_ingest_socket_access.py": "host-users",
    "test_ansible_role.py": "host-users",
    "test_systemd_container.py": "host-containers",
    "test_fleet.py": "host-containers",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup` (make test), a whole test file goes to one worker, so module-scoped
    fixtures are built once; the host-wide files share a group (HOST_WIDE)."""
    if getattr(config.option, "dist", "no") != "loadgroup":
        return
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group(HOST_WIDE.get(name, str(item.path.relative_to(config.rootpath)))))


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
