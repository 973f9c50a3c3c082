"""The deployment's topology run on one machine: ``ledger dev cluster`` (``make cluster``).

A PostgreSQL primary and its streaming hot standby, N API replicas, the
projector (with the webhook dispatcher), the Stripe stand-in and nginx in front,
as ``docker-compose.yml`` describes them; the tests in ``tests/cluster/`` run the
same processes, on network namespaces of their own where the machine allows.
"""
