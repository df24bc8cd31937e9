"""Socket.IO packets bounded to what this app's events carry: one binary attachment, a short text part.

python-socketio collects as many binary attachments as a packet declares, each up to the message cap,
until they have all come: a packet declaring 9,999,999 held its connection's every later message in
memory (gigabytes) until the client left. And the JSON of a text packet is parsed on the event loop:
10 MB of `[],` took ~0.4 GB and stalled every client for most of a second. A `frame` carries one JPEG
as its one attachment and a few dozen characters of text; `reset` carries nothing.
"""

from __future__ import annotations

from socketio import packet

# the longest text part (JSON) a packet may have; the app's own are under 100 characters
MAX_TEXT_CHARS = 16 * 1024
MAX_ATTACHMENTS = 1


class BoundedPacket(packet.Packet):
    """`socketio.Packet` (the default serializer) that refuses long text, answers packets with too
    many attachments (or none) without collecting them, and hands on an event whose placeholders point
    nowhere instead of waiting on."""

    def decode(self, encoded_packet):
        """Decode as `Packet` does; the return value is the number of attachments still to collect.

        A packet declaring more than `MAX_ATTACHMENTS` goes to its event handler with none (their
        placeholders stand in the arguments), which refuses it in its ack; the attachments that follow
        are then messages of their own, each refused as it comes.

        Raises:
            ValueError: for text over `MAX_TEXT_CHARS` (python-engineio logs it; the packet is dropped).
        """
        if isinstance(encoded_packet, str) and len(encoded_packet) > MAX_TEXT_CHARS:
            raise ValueError(
                f"a Socket.IO packet of {len(encoded_packet):,} characters; this app's are at most {MAX_TEXT_CHARS:,}"
            )
        attachments = super().decode(encoded_packet)
        unbinary = {packet.BINARY_EVENT: packet.EVENT, packet.BINARY_ACK: packet.ACK}
        # none declared: python-socketio would wait for an attachment, take the next message as one, refuse
        # it as unexpected and every message after it, and the connection would never be answered again
        if 1 <= attachments <= MAX_ATTACHMENTS or self.packet_type not in unbinary:
            return attachments  # (other packet types never collect attachments)
        self.packet_type = unbinary[self.packet_type]
        self.attachment_count = 0
        return 0

    def add_attachment(self, attachment) -> bool:
        """Take an attachment as `Packet` does; when the placeholders cannot be filled (a number out of
        range or not a number, or nested deeper than Python recurses), the event goes to its handler
        with its placeholders standing in, which it refuses in its ack. Raised, the error left the packet
        waiting for an attachment for ever: every later message on the connection was refused unanswered."""
        try:
            return super().add_attachment(attachment)
        except (IndexError, KeyError, TypeError, RecursionError):
            self.attachments = []
            return True
