"""
The operator's HTTP API of a running ``twistd paychan``: JSON endpoints under ``/v1``, a
server-sent event stream, health and Prometheus metrics, on the server's own reactor.

``auth`` (the bearer token and the files the CLI finds the server by), ``views`` (what a channel
and the server look like in JSON), ``events`` (the replay buffer and the SSE stream), ``metrics``
(an explicit ``prometheus_client`` registry fed by ``net.observers`` hooks), ``health``,
``resources`` (the ``twisted.web`` routes) and ``service`` (listening, for ``tap.py``).
``doc/api.md`` is the reference.
"""
