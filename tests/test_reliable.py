from dp2pt.proto import messages
from dp2pt.proto.reliable import ReliableLink


def test_retransmits_until_acked_then_stops():
    sender, receiver = ReliableLink(rto=0.1, max_tries=3), ReliableLink()
    data = sender.send({"type": "login", "id": "A"}, now=0.0)
    assert sender.due(0.05) == ([], [])
    resend, lost = sender.due(0.11)
    assert resend == [data] and lost == []
    msg, ack = receiver.receive(messages.decode(data))
    assert msg["id"] == "A"
    again, ack2 = receiver.receive(messages.decode(data))
    assert again is None and ack2 == ack  # duplicate: acked, not delivered twice
    sender.receive(messages.decode(ack))
    assert sender.idle and sender.due(10.0) == ([], [])


def test_gives_up_after_max_tries():
    sender = ReliableLink(rto=0.1, max_tries=2)
    sender.send({"type": "ping", "token": "t"}, now=0.0)
    assert len(sender.due(0.11)[0]) == 1
    resend, lost = sender.due(1.0)
    assert resend == [] and lost[0]["type"] == "ping"
