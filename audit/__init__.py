"""The auditor's tools: replay everything and prove the ledger right, export histories,
sign checkpoints that anchor the proof outside the database.

A package of its own because it crosses the others on purpose: it replays the
store through the domain (ledger/) and checks the views (projections/) against
that replay, so it must depend on both and be depended on by neither.
"""
