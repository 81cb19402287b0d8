"""Presence in Redis: every worker's connections by channel and member, added
up across workers and hosts, and cleaned up after a worker that died.

Keys, under the backend's prefix (see :mod:`.keys`: a channel's keys have a
part of their own, ``presence/channel/``, so no channel name is a fixed key):

- ``presence/workers``: a sorted set of worker ids, scored with the time
  (Redis's clock, milliseconds) until which each one's entries hold. A worker
  renews it every half heartbeat; past it, the worker is taken for dead.
- ``presence/worker/<id>``: the channels where that worker has entries.
- ``presence/channel/<channel>/<id>``: that worker's connections by member.
- ``presence/channel/<channel>``: the totals by member, across workers.

Every key expires (twice a worker's lease after its last renewal), so
nothing is left when every worker is gone without reaping the others.

Each script runs as one command, so a total never disagrees with the
entries it adds up, and a member's first join and last leave are seen by
exactly one caller. A script checks the type of every key it writes before
its first write: Redis does not roll a failed script back. The scripts build
key names from their arguments: the store is one Redis server (or a
Sentinel-managed primary), not a cluster.
"""

from __future__ import annotations

import typing as t

import redis

from ...errors import BackendUnavailable
from .keys import PRESENCE_CHANNEL
from .keys import PRESENCE_WORKER
from .keys import PRESENCE_WORKERS

#: Lua: fail, before any write, if a key holds another type than the script
#: writes (another program writing under the prefix): a failed script
#: leaves what it wrote before the error.
_CHECK = """
local function check(key, kind)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= kind then
    return redis.error_reply('eventstream presence: key ' .. key .. ' holds a '
      .. found .. ', not a ' .. kind .. ': another program writes under'
      .. ' EVENTSTREAM_REDIS_PREFIX')
  end
  return nil
end
"""


def _lua(body: str) -> str:
    """A presence script: the type check, then ``body`` with the fixed key
    parts of :mod:`.keys` in place of ``@WORKERS@``, ``@WORKER@`` and
    ``@CHANNEL@``.
    """
    parts = {
        "@WORKERS@": PRESENCE_WORKERS,
        "@WORKER@": PRESENCE_WORKER,
        "@CHANNEL@": PRESENCE_CHANNEL,
    }
    for name, part in parts.items():
        body = body.replace(name, part)
    return _CHECK + body


#: Set one worker's counts on one channel; return the joins and leaves of
#: the totals (a flat list: kind, member, ...), or false if the worker is
#: not registered (its entries were reaped): it must tick, then set all.
#: ``ARGV[5]``: milliseconds the keys it writes are kept.
SET_SCRIPT = _lua(
    """
local P, wid, ch, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local W = P .. '@WORKERS@'
local bad = check(W, 'zset')
if bad then return bad end
local alive = redis.call('ZSCORE', W, wid)
if not alive or tonumber(alive) < now then
  return false
end
local mine = P .. '@CHANNEL@' .. ch .. '/' .. wid
local all = P .. '@CHANNEL@' .. ch
local chans = P .. '@WORKER@' .. wid
bad = check(mine, 'hash') or check(all, 'hash') or check(chans, 'set')
if bad then return bad end
local want = {}
for i = 6, #ARGV, 2 do
  want[ARGV[i]] = tonumber(ARGV[i + 1])
end
if ARGV[4] == '1' then
  for _, member in ipairs(redis.call('HKEYS', mine)) do
    if want[member] == nil then
      want[member] = 0
    end
  end
end
local changes = {}
for member, count in pairs(want) do
  local old = tonumber(redis.call('HGET', mine, member) or '0')
  if count ~= old then
    if count > 0 then
      redis.call('HSET', mine, member, count)
    else
      redis.call('HDEL', mine, member)
    end
    local total = redis.call('HINCRBY', all, member, count - old)
    local before = total - (count - old)
    if total <= 0 then
      redis.call('HDEL', all, member)
    end
    if before <= 0 and total > 0 then
      changes[#changes + 1] = 'join'
      changes[#changes + 1] = member
    elseif before > 0 and total <= 0 then
      changes[#changes + 1] = 'leave'
      changes[#changes + 1] = member
    end
  end
end
if redis.call('EXISTS', mine) == 1 then
  redis.call('SADD', chans, ch)
  redis.call('PEXPIRE', mine, keep)
else
  redis.call('SREM', chans, ch)
end
if redis.call('EXISTS', chans) == 1 then
  redis.call('PEXPIRE', chans, keep)
end
if redis.call('EXISTS', all) == 1 then
  redis.call('PEXPIRE', all, keep)
end
return changes
"""
)

#: Reap the workers whose entries expired (their counts leave the totals),
#: then renew this worker's (``ARGV[2]``, unless empty) for ``ARGV[3]`` ms,
#: and keep its keys for ``ARGV[4]`` ms. Returns whether this worker's own
#: had expired (1 or 0), then the channel and member of each total that
#: went to zero.
TICK_SCRIPT = _lua(
    """
local P, wid, ttl, keep = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local W = P .. '@WORKERS@'
local bad = check(W, 'zset')
if bad then return bad end
local lost = 0
if wid ~= '' then
  local alive = redis.call('ZSCORE', W, wid)
  if not alive or tonumber(alive) < now then
    lost = 1
  end
end
local out = {lost}
local dead = redis.call('ZRANGEBYSCORE', W, '-inf', '(' .. now, 'LIMIT', 0, 100)
-- Every key read and written below is checked first: nothing is written
-- unless all of it can be.
local reap = {}
for _, d in ipairs(dead) do
  local chans = P .. '@WORKER@' .. d
  bad = check(chans, 'set')
  if bad then return bad end
  local entries = {}
  for _, ch in ipairs(redis.call('SMEMBERS', chans)) do
    local mine = P .. '@CHANNEL@' .. ch .. '/' .. d
    local all = P .. '@CHANNEL@' .. ch
    bad = check(mine, 'hash') or check(all, 'hash')
    if bad then return bad end
    entries[#entries + 1] = {ch, mine, all}
  end
  reap[#reap + 1] = {d, chans, entries}
end
local renew = {}
if wid ~= '' then
  local chans = P .. '@WORKER@' .. wid
  bad = check(chans, 'set')
  if bad then return bad end
  for _, ch in ipairs(redis.call('SMEMBERS', chans)) do
    renew[#renew + 1] = P .. '@CHANNEL@' .. ch .. '/' .. wid
    renew[#renew + 1] = P .. '@CHANNEL@' .. ch
  end
  renew[#renew + 1] = chans
end
for _, r in ipairs(reap) do
  for _, e in ipairs(r[3]) do
    local kv = redis.call('HGETALL', e[2])
    for i = 1, #kv, 2 do
      local total = redis.call('HINCRBY', e[3], kv[i], -tonumber(kv[i + 1]))
      if total <= 0 then
        redis.call('HDEL', e[3], kv[i])
        out[#out + 1] = e[1]
        out[#out + 1] = kv[i]
      end
    end
    redis.call('DEL', e[2])
  end
  redis.call('DEL', r[2])
  redis.call('ZREM', W, r[1])
end
if wid ~= '' then
  redis.call('ZADD', W, now + ttl, wid)
  for _, key in ipairs(renew) do
    redis.call('PEXPIRE', key, keep)
  end
end
if redis.call('EXISTS', W) == 1 then
  redis.call('PEXPIRE', W, keep)
end
return out
"""
)


class RedisPresence:
    """Every worker's connections by channel and member, in Redis: what
    :meth:`.Backend.presence_set`, ``presence_tick`` and ``presence_read``
    do for the Redis backend.

    :param client: the store's pooled client.
    :param prefix: the prefix of every key (``EVENTSTREAM_REDIS_PREFIX``).
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        #: Milliseconds a presence key is kept after its last write: twice
        #: the lease of the workers' entries (set by each tick), so a dead
        #: worker's are still there when another reaps it, and gone if none
        #: does.
        self.presence_keep = 60_000

    def presence_set(
        self, worker: str, channel: str, counts: t.Mapping[str, int], full: bool
    ) -> list[tuple[str, str]] | None:
        """See :meth:`.Backend.presence_set`."""
        args: list[str | int] = [self.prefix, worker, channel, "1" if full else "0"]
        args.append(self.presence_keep)
        for member, count in counts.items():
            args += [member, count]
        reply = self._run(SET_SCRIPT, args)
        if reply is None:
            return None
        return _pairs(reply)

    def presence_tick(
        self, worker: str, ttl: float
    ) -> tuple[bool, list[tuple[str, str]]]:
        """See :meth:`.Backend.presence_tick`."""
        if worker:
            self.presence_keep = max(1000, int(ttl * 2000))
        args: list[str | int] = [self.prefix, worker, int(ttl * 1000)]
        args.append(self.presence_keep)
        reply = self._run(TICK_SCRIPT, args)
        return bool(reply[0]), _pairs(reply[1:])

    def presence_read(self, channel: str) -> dict[str, int]:
        """See :meth:`.Backend.presence_read`."""
        try:
            found: dict[bytes, bytes] = self.redis.hgetall(  # type: ignore[assignment]
                f"{self.prefix}{PRESENCE_CHANNEL}{channel}"
            )
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        return {member.decode(): int(count) for member, count in found.items()}

    def _run(self, script: str, args: list[str | int]) -> t.Any:
        try:
            return self.redis.register_script(script)(keys=[], args=args)
        except redis.ResponseError as error:  # it answered: not unreachable
            raise BackendUnavailable(
                f"Redis refused the presence script (nothing was written): {error}"
            ) from error
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error


def _pairs(reply: list[bytes]) -> list[tuple[str, str]]:
    words = [item.decode() for item in reply]
    return list(zip(words[::2], words[1::2], strict=True))
