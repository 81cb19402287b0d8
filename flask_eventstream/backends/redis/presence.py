"""Presence in Redis: every worker's connections by channel and member, added
up across workers and hosts, and cleaned up after a worker that died.

Keys, under the backend's prefix:

- ``presence/workers``: a sorted set of worker ids, scored with the time
  (Redis's clock, milliseconds) until which each one's entries hold. A worker
  renews it every half heartbeat; past it, the worker is taken for dead.
- ``presence/worker/<id>``: the channels where that worker has entries.
- ``presence/<channel>/<id>``: that worker's connections by member.
- ``presence/<channel>``: the totals by member, across workers.

Each script runs as one command, so a total never disagrees with the
entries it adds up, and a member's first join and last leave are seen by
exactly one caller. The scripts build key names from their arguments: the
store is one Redis server (or a Sentinel-managed primary), not a cluster.
"""

from __future__ import annotations

import typing as t

import redis

from ...errors import BackendUnavailable

#: Set one worker's counts on one channel; return the joins and leaves of
#: the totals (a flat list: kind, member, ...), or false if the worker is
#: not registered (its entries were reaped): it must tick, then set all.
SET_SCRIPT = """
local P, wid, ch = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local alive = redis.call('ZSCORE', P .. 'presence/workers', wid)
if not alive or tonumber(alive) < now then
  return false
end
local mine = P .. 'presence/' .. ch .. '/' .. wid
local all = P .. 'presence/' .. ch
local want = {}
for i = 5, #ARGV, 2 do
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
  redis.call('SADD', P .. 'presence/worker/' .. wid, ch)
else
  redis.call('SREM', P .. 'presence/worker/' .. wid, ch)
end
return changes
"""

#: Reap the workers whose entries expired (their counts leave the totals),
#: then renew this worker's (``ARGV[2]``, unless empty) for ``ARGV[3]`` ms.
#: Returns whether this worker's own had expired (1 or 0), then the channel
#: and member of each total that went to zero.
TICK_SCRIPT = """
local P, wid, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local W = P .. 'presence/workers'
local lost = 0
if wid ~= '' then
  local alive = redis.call('ZSCORE', W, wid)
  if not alive or tonumber(alive) < now then
    lost = 1
  end
end
local out = {lost}
local dead = redis.call('ZRANGEBYSCORE', W, '-inf', '(' .. now, 'LIMIT', 0, 100)
for _, d in ipairs(dead) do
  local chans = P .. 'presence/worker/' .. d
  for _, ch in ipairs(redis.call('SMEMBERS', chans)) do
    local mine = P .. 'presence/' .. ch .. '/' .. d
    local all = P .. 'presence/' .. ch
    local kv = redis.call('HGETALL', mine)
    for i = 1, #kv, 2 do
      local total = redis.call('HINCRBY', all, kv[i], -tonumber(kv[i + 1]))
      if total <= 0 then
        redis.call('HDEL', all, kv[i])
        out[#out + 1] = ch
        out[#out + 1] = kv[i]
      end
    end
    redis.call('DEL', mine)
  end
  redis.call('DEL', chans)
  redis.call('ZREM', W, d)
end
if wid ~= '' then
  redis.call('ZADD', W, now + ttl, wid)
end
return out
"""


class RedisPresence:
    """The presence methods of :class:`RedisBackend` (see ``Backend``)."""

    redis: redis.Redis
    prefix: str

    def presence_set(
        self, worker: str, channel: str, counts: t.Mapping[str, int], full: bool
    ) -> list[tuple[str, str]] | None:
        args: list[str | int] = [self.prefix, worker, channel, "1" if full else "0"]
        for member, count in counts.items():
            args += [member, count]
        reply = self._run(SET_SCRIPT, args)
        if reply is None:
            return None
        return _pairs(reply)

    def presence_tick(
        self, worker: str, ttl: float
    ) -> tuple[bool, list[tuple[str, str]]]:
        reply = self._run(TICK_SCRIPT, [self.prefix, worker, int(ttl * 1000)])
        return bool(reply[0]), _pairs(reply[1:])

    def presence_read(self, channel: str) -> dict[str, int]:
        try:
            found: dict[bytes, bytes] = self.redis.hgetall(  # type: ignore[assignment]
                f"{self.prefix}presence/{channel}"
            )
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        return {member.decode(): int(count) for member, count in found.items()}

    def _run(self, script: str, args: list[str | int]) -> t.Any:
        try:
            return self.redis.register_script(script)(keys=[], args=args)
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error


def _pairs(reply: list[bytes]) -> list[tuple[str, str]]:
    words = [item.decode() for item in reply]
    return list(zip(words[::2], words[1::2], strict=True))
