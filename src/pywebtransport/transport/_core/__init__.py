"""The sans-I/O core of the transport: WebTransport over HTTP/3 without asyncio or a clock.

Modules by concern: `codes` (application error codes on HTTP/3), `capsules`
(RFC 9297), `sfv` (RFC 8941 strings), `dialects` (what each draft puts on the
wire), `headers` (CONNECT requests, answers, subprotocols), `flow` (draft-15
session flow control), `records` (session and stream state, the session
transition table), `events` (what the protocol reports) and `protocol`
(`WebTransportCore`, the owner of every record), built in layers: `base`
(shared state), `datagrams`, `halves` (stream reads and writes), `held`
(streams that arrive before their session), `sessions` and `protocol` itself
(what the peer sends). Private: the public API
is the asyncio layer in `pywebtransport.transport`.
"""
