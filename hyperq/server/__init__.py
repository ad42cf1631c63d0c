"""The server: the trio edge around a pure model.

This package itself holds the edge (startup, the nursery tree, the client API, worker
connections, replies, lifecycle, config). Below it lie two rooms:
`model/` (pure, event-sourced state and scheduling) and `journal/` (the journal file,
its writer, snapshots and restore). The edge may import both; `journal/` may import
`model/` but never the edge; `model/` imports only `hyperq.common` and the standard
library. The import contracts in pyproject.toml check this.
"""
