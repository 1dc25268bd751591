"""Forwarding stored objects through the durable outbox (audit/outbox.py).

`process.run` is the forwarding process the node starts; `forwarder.Forwarder` its sending
threads; `sender.Sender` one association. Imported by the node only when it forwards.
"""
