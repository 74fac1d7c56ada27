"""The test harness: what the tests and bench/ share to run the sidecar as users run it.

- ``system``: free loopback ports, waiting for a listener, whether a PID is alive.
- ``sidecar``: ``SidecarProcess`` (``sidecar serve`` as a subprocess) and ``run_cli``.
- ``api``: ``ApiServer`` (the management API's view of it) and ``call`` for one request.
- ``policy``: the policy client and the real Postfix requests in tests/data/policy.
- ``services``: private PostgreSQL and Redis servers.
- ``corpus_import``: a labelled bounce corpus through ``sidecar import``, its wrong suppressions.

bench/ imports ``tests.harness`` as a library (bench/README.md), never a test module.
"""
