"""`hq journal report`: a journal file in, one self-contained HTML page out (cluster.md §6).

`data` folds the journal's events into time series and task statistics (pure, no I/O);
`render` draws them as inline SVG (no scripts from the network, so the page opens
offline). Imports only the core: the journal format, the event model and hyperq.common.
"""
