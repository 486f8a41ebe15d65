"""ansim's own sans-IO SIP core: message model, parser, URIs, validation, transactions, dialogs.

Nothing in this package opens a socket, touches asyncio or reads a clock: bytes and a
time value go in, bytes and events come out. It is ansim's own because the B2BUA hot
path needs a parser and transaction layer built for speed, and no maintained Python SIP
stack fits (see DESIGN.md, "Dependencies"). Setup compiles these modules with mypyc for
speed; the sources are the reference and run as they are when no current build exists
(see ``b2bua/native.py``).

Substring tests on bytes are written ``data.find(sub) >= 0``, not ``sub in data``:
CPython's ``in`` on bytes first tries the needle as an integer, raising and discarding a
TypeError each time, which costs more than the search.
"""
