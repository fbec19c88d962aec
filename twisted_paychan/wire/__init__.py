"""
The wire layer: how channel messages become bytes on a stream and back (PROTOCOL.md §1, §2).

- ``paymentchannel_pb2``: generated from ``proto/paymentchannel.proto`` (do not edit; run
  ``python -m twisted_paychan.wire.regenerate``).
- ``messages``: the only module that parses or serializes those classes. It checks proto2's
  required fields (the protobuf runtime does not on parse), and has one constructor per message
  that produces the same bytes bitcoinj does. Other packages import message classes from here,
  never from protobuf.
- ``received``: each received ``TwoWayChannelMessage`` as a frozen dataclass of its type, with
  its required fields checked; the connection machines take these, never protobuf. Outgoing
  messages stay protobuf, built by the constructors in ``messages``.
- ``framing``: a Twisted protocol base class for the 4-byte length-prefixed stream, with the
  32767-byte limit, the reaction to bad input, and an optional idle timeout.
"""
