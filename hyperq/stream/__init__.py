"""Stream file format: writer and reader.

Streamed task output (`--stream <DIR>`) lands in a few binary `*.hqs` files per
directory: a header naming the server instance and the worker, then CRC-framed records
of task output. The worker writes them (`format.encode_*`), `hq output-log` reads them
(`reader`). Standard library only: no trio, no server or client code, so both sides can
use it.
"""
