"""Media handling: the RTP/RTCP relay process, encrypted call recording, RFC 4733 DTMF,
and the rtpengine driver. Imports nothing else of ansim.

The engine does not attach media to calls yet; ``docs/media.md`` is the interface it
will use (:class:`media.client.RelayClient`, :class:`media.rtpengine.RtpengineClient`,
:mod:`media.rtpengine_tap`, :mod:`media.recordings`, :mod:`media.settings`).
"""
