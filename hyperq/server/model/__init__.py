"""The server's pure, event-sourced core: jobs, tasks, workers and scheduling decisions.

Everything here changes only by applying events and answers queries as plain values:
no trio, no I/O, no clock (times arrive inside events). It imports only
`hyperq.common` and the standard library, so it can be tested without sockets.
"""
