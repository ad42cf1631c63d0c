"""`hq dashboard`: a terminal UI over the server's event stream or a journal (cluster.md §7).

`data` is the pure model built from event JSON; `app` is the Textual UI over it; `main`
gets the events (live from the server, or from a journal file) and starts the UI.
Textual is an optional extra (`hyperq[dashboard]`) and is imported only here.
"""
