"""ansim's SIP side: the sans-IO SIP core, transports, the B2BUA call engine and the CLI."""

from . import native

native.select()  # before any hot-path module is imported: compiled build or sources
