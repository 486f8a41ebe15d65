"""Media handling: the RTP/RTCP relay process, encrypted call recording, RFC 4733 DTMF,
and the rtpengine driver. Imports nothing else of ansim.

The engine attaches media to calls' legs through these (``b2bua.anchor``);
``docs/media.md`` is the interface it uses (:class:`media.client.RelayClient`,
:class:`media.rtpengine.RtpengineClient`, :mod:`media.rtpengine_tap`,
:mod:`media.recordings`, :mod:`media.settings`).
"""
