"""moto's server, with one fix to its SQS FIFO emulation.

moto 5.2.1 reorders a FIFO message group after a consumer times out holding
two or more of its messages (a drainer killed mid-batch): on the next receive
it takes the head message out of its "in flight" set, still finds the group
in flight because of the messages behind it, skips the head, and hands out
the second message first. Real SQS hands the group out from its head. This
wrapper drops every timed-out message from the in-flight set before a receive,
which is SQS's behaviour. tests/tests/moto_fifo.rs shows the difference
against plain moto and against this server.

Usage: python tools/moto_server.py -H 127.0.0.1 -p 5000 (moto.server's flags).
"""

import sys

from moto.sqs.models import SQSBackend

_receive = SQSBackend.receive_message


def receive_message(self, queue_name, *args, **kwargs):
    queue = self.get_queue(queue_name)
    for message in list(queue.pending_messages):
        if message.visible:
            queue.pending_messages.discard(message)
    return _receive(self, queue_name, *args, **kwargs)


SQSBackend.receive_message = receive_message

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
