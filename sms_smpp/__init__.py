"""SMS relay over SMPP 3.4: sans-IO PDU codec, server and client sides, store and forward."""
