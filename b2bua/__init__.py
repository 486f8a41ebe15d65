"""ansim's SIP side: the sans-IO SIP core, transports, the B2BUA call engine and the CLI."""
