"""The journal: its file format, the writer service and disk sink, snapshots, restore.

It turns the model's events into durable records and back (restore, recovery, replay
without a journal, prune). It may import `hyperq.server.model`, `hyperq.transport` and
`hyperq.common`, never the server's edge.
"""
