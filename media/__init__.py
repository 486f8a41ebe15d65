"""Media handling: RTP relay, recording, DTMF and prompts (imports nothing else of ansim)."""
