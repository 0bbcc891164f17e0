"""The tests' XMPP clients are the toolkit's own (easycluster.xmpp, also used by `fab smoke`)."""

from easycluster.xmpp import Client, can_login, register, send_and_receive  # noqa: F401
