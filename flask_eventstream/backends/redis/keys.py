"""Every Redis key the backend writes, listed in one place.

User input (a channel name, an idempotency key) never shares a key part
with the library's fixed keys: each kind of key has a part of its own right
after the prefix, and a channel name (which holds no ``/``, see
:data:`~flask_eventstream.settings.CHANNEL_PATTERN`) comes after that part,
then ``/`` and anything else. Under the prefix (``EVENTSTREAM_REDIS_PREFIX``):

=================================  ==========  =================================
key                                type        what
=================================  ==========  =================================
``last-id``                        string      the newest id of the sequence
``epoch``                          string      the store's epoch
``control``                        stream      ``close_channel`` entries
``stream:<channel>``               stream      a channel's history
``once/<channel>/<key>``           hash        an idempotency key (expires)
``closed/<channel>``               string      when ``close_channel`` last
                                               closed it, for tokens (expires)
``worker:<worker>``                string      a worker's figures (expires)
``presence/workers``               zset        workers, by when their entries
                                               expire (expires)
``presence/worker/<worker>``       set         the channels of a worker's
                                               entries (expires)
``presence/channel/<channel>``     hash        members' totals (expires)
``presence/channel/<channel>/<w>`` hash        one worker's members (expires)
=================================  ==========  =================================

The pub/sub channels are named like the streams they announce. A worker's
name is ``host:pid:hex``, a hostname holds no ``/``. The store names its
keys with :class:`Keys`; the presence scripts take theirs from the parts
below.
"""

from __future__ import annotations

#: The presence keys' parts, shared with the Lua scripts (which build the
#: per-channel and per-worker names from them).
PRESENCE_WORKERS = "presence/workers"
PRESENCE_WORKER = "presence/worker/"
PRESENCE_CHANNEL = "presence/channel/"


class Keys:
    """The names of the store's keys under ``prefix`` (see the table above)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.last_id = f"{prefix}last-id"
        self.epoch = f"{prefix}epoch"
        #: Also the pub/sub channel the listener reads its entries from.
        self.control = f"{prefix}control".encode()

    def stream(self, channel: str) -> str:
        """A channel's history (and the pub/sub channel of its entries)."""
        return f"{self.prefix}stream:{channel}"

    def once(self, channel: str, key: str) -> str:
        """An idempotency key's record: ``/`` is in no channel name, so no
        two (channel, key) pairs share a name.
        """
        return f"{self.prefix}once/{channel}/{key}"

    def closed(self, channel: str) -> str:
        """When ``close_channel`` last closed ``channel``."""
        return f"{self.prefix}closed/{channel}"

    def worker(self, name: str) -> str:
        """A worker's figures; ``*`` matches every worker's."""
        return f"{self.prefix}worker:{name}"
