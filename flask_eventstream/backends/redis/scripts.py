"""The Lua scripts that keep the Redis store's sequence, epoch and links
atomic: each runs as one command, so no other client comes between its steps.

The append script's arguments (:class:`Append`), its reply
(:func:`append_reply`) and the message it publishes (:func:`parse_message`)
are defined here and nowhere else: the store, a worker's own events and the
tests use these.
"""

from __future__ import annotations

import typing as t

from ...ids import format_id
from ...ids import Key
from ...ids import Record
from ...wire import Event
from .codec import Entry
from .codec import key_of

#: The Lua script of :meth:`.Store.append`, called with an :class:`Append`.
#: It assigns the next key of the shared sequence (milliseconds from Redis's
#: clock, never going back, nor below ``known_key``, the newest key the
#: caller knows, nor below the channel's last entry), names the store's epoch
#: if it has none yet (or a new one if the store's newest key is below the
#: newest the caller saw in that epoch, ``known_epoch``: it lost writes), adds
#: the event under it with the key of the channel's previous entry (``p``),
#: trims, and sets the expiry. It publishes the entry on the pub/sub channel
#: named like the stream, for the listeners (see :func:`parse_message`): in
#: the same step, so messages go out in id order. It returns an
#: :class:`Appended`.
#:
#: With an idempotency window (``window_ms``, ``once_key`` the key's record),
#: an event stored under that key within the window is returned instead (a
#: :class:`Repeated`), and nothing is stored: the check and the append are
#: one step, whoever retries.
#:
#: Redis does not undo what a failed script wrote, so the script reads and
#: checks everything that can fail (its arguments, the type of every key)
#: before its first write, the ``XADD``. An error up to and including that
#: write starts with :data:`NOT_STORED`: nothing was written. Any other error
#: (an ACL that refuses a later command) may come after the event was stored.
APPEND_SCRIPT = """
local MOST = 9007199254740992  -- 2^53: exact in Lua, far below what PEXPIRE takes
local function fail(message)
  error({err = 'NOTSTORED ' .. message})
end
-- A command before the first write, or that write: its error says that
-- nothing was written.
local function try(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    fail(reply.err)
  end
  return reply
end
local function whole(value, what)
  local n = string.match(value, '^%d+$') and tonumber(value)
  if not n or n > MOST then
    fail(what .. ' ' .. string.sub(value, 1, 40) .. ' is not a whole number'
         .. ' from 0 to 2^53')
  end
  return n
end
local function key(text, what)
  local ms, seq = string.match(text, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if not ms or ms > MOST or seq > MOST then
    fail(what .. ' ' .. string.sub(text, 1, 40) .. ' is not an id')
  end
  return ms, seq
end
whole(ARGV[1], 'the entries kept')
local ttl = whole(ARGV[2], 'the expiry in milliseconds')
local window = whole(ARGV[7], 'the idempotency window in milliseconds')
if window > 0 then
  local seen = try('HMGET', KEYS[4], 'i', 'x', 'd', 'e')
  if seen[1] then
    return {seen[1], seen[2], 1, seen[3], seen[4] or ''}
  end
end
local t = try('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
local stored = try('GET', KEYS[2])
local kms, kseq = key(ARGV[5], 'the known key')
local lms, lseq = kms, kseq
if stored then
  lms, lseq = key(stored, 'the newest key (' .. KEYS[2] .. ')')
end
local epoch = try('GET', KEYS[3])
if stored and epoch == ARGV[8] and (kms > lms or (kms == lms and kseq > lseq)) then
  -- The caller saw ids the store no longer has: it lost writes (a failover
  -- to a replica that never got them). A new epoch, and ids above them.
  epoch = false
  lms, lseq = kms, kseq
end
if ms <= lms then
  ms = lms
  seq = lseq + 1
end
local before = try('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if before[1] then
  prev = before[1][1]
  -- XADD takes only an id above the stream's last, which is above the
  -- sequence if the sequence's key was lost (evicted, deleted).
  local pms, pseq = key(prev, 'the last entry of ' .. KEYS[1])
  if ms < pms or (ms == pms and seq <= pseq) then
    ms, seq = pms, pseq + 1
  end
end
local named = not epoch
if named then
  epoch = ARGV[6]
end
local id = string.format('%d-%d', ms, seq)
local add = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'd', ARGV[4], 'p', prev}
if ARGV[3] ~= '' then
  add[#add + 1] = 'e'
  add[#add + 1] = ARGV[3]
end
try(unpack(add))  -- the first write
if named then
  redis.call('SET', KEYS[3], epoch)
end
redis.call('SET', KEYS[2], id)
if window > 0 then
  redis.call('HSET', KEYS[4], 'i', id, 'x', epoch, 'd', ARGV[4], 'e', ARGV[3])
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local nl = '\\n'
redis.call('PUBLISH', KEYS[1],
           id .. nl .. prev .. nl .. epoch .. nl .. ARGV[3] .. nl .. ARGV[4])
return {id, epoch, stored or '0-0', prev}
"""

#: How an error of :data:`APPEND_SCRIPT` starts when the script wrote
#: nothing: it refused its arguments or a key, or its first write failed.
NOT_STORED = "NOTSTORED "


class Append(t.NamedTuple):
    """The arguments of one call of :data:`APPEND_SCRIPT`, in its order."""

    #: ``KEYS[1]``: the channel's stream (also its pub/sub channel).
    stream: str | bytes
    #: ``KEYS[2]``: the newest key of the shared sequence.
    last_key: str
    #: ``KEYS[3]``: the store's epoch.
    epoch_key: str
    #: ``KEYS[4]``: the idempotency key's record (``""``: none).
    once_key: str
    #: ``ARGV[1]``: entries kept (``MAXLEN ~``).
    maxlen: int
    #: ``ARGV[2]``: milliseconds the stream is kept after it (0: kept).
    ttl_ms: int
    #: ``ARGV[3]``: the event's type (``""``: none).
    event: str
    #: ``ARGV[4]``: the event's data.
    data: str
    #: ``ARGV[5]``: the newest key the caller knows (``"0-0"``: none).
    known_key: str
    #: ``ARGV[6]``: the epoch to name if the store needs a new one.
    new_epoch: str
    #: ``ARGV[7]``: milliseconds the idempotency key holds (0: no key).
    window_ms: int
    #: ``ARGV[8]``: the epoch of ``known_key``.
    known_epoch: str

    def keys(self) -> list[str | bytes]:
        """The script's ``KEYS``."""
        return [self.stream, self.last_key, self.epoch_key, self.once_key]

    def argv(self) -> list[str | int]:
        """The script's ``ARGV``."""
        return [
            self.maxlen,
            self.ttl_ms,
            self.event,
            self.data,
            self.known_key,
            self.new_epoch,
            self.window_ms,
            self.known_epoch,
        ]

    def stream_key(self) -> bytes:
        """:attr:`stream` as Redis names it in a message."""
        stream = self.stream
        return stream if isinstance(stream, bytes) else stream.encode()


class Appended(t.NamedTuple):
    """What one call of the append script stored: the new key, the store's
    epoch, the key before it in the shared sequence and on its channel.
    """

    key: Key
    epoch: str
    before: Key
    prev: Key


class Repeated(t.NamedTuple):
    """A repeat of an earlier append (its idempotency key): nothing was
    stored; the key, epoch, data and type of the event that was.
    """

    key: Key
    epoch: str
    data: str
    event: str | None


def append_reply(reply: t.Sequence[t.Any]) -> Appended | Repeated:
    """Read the append script's reply."""
    key, epoch = key_of(reply[0]), reply[1].decode()
    if len(reply) == 5:  # {id, epoch, 1, data, type}
        return Repeated(key, epoch, reply[3].decode(), reply[4].decode() or None)
    return Appended(key, epoch, key_of(reply[2]), key_of(reply[3]))


def parse_message(stream: bytes, channel: str, payload: bytes) -> tuple[Entry, str]:
    """Read a message the append script published: the entry and its
    store's epoch.
    """
    raw_id, raw_prev, raw_epoch, type_, data = payload.split(b"\n", 4)
    key = key_of(raw_id)
    epoch = raw_epoch.decode()
    event = Event(data.decode(), type_.decode() or None, format_id(key, epoch))
    return Entry(stream, Record(channel, key, event, key_of(raw_prev))), epoch


#: Names the store's epoch if it has none; returns it with the newest key.
HEAD_SCRIPT = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
return {redis.call('GET', KEYS[1]) or '0-0', epoch}
"""

#: The store lost writes that a worker saw (a failover to a replica that
#: never got them, a restart from an old snapshot): if the epoch is still
#: ``ARGV[1]`` and the newest key is below ``ARGV[2]`` (or ``ARGV[4]`` is
#: ``1``: the worker found the entry of that key gone), name a new epoch
#: (``ARGV[3]``) so every cursor into the old one gets a reset, and keep ids
#: above what was seen. Returns the epoch now.
RENEW_SCRIPT = """
local epoch = redis.call('GET', KEYS[2])
local last = redis.call('GET', KEYS[1]) or '0-0'
local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
local sms, sseq = string.match(ARGV[2], '^(%d+)-(%d+)$')
lms, lseq, sms, sseq = tonumber(lms), tonumber(lseq), tonumber(sms), tonumber(sseq)
local behind = lms < sms or (lms == sms and lseq < sseq)
if epoch == ARGV[1] and (behind or ARGV[4] == '1') then
  epoch = ARGV[3]
  redis.call('SET', KEYS[2], epoch)
  if behind then
    redis.call('SET', KEYS[1], ARGV[2])
  end
end
return epoch or ''
"""

#: The Lua script of :meth:`.Store.read`: the store's newest key and
#: epoch, then, unless the epoch is not the cursor's (``ARGV[4]``) or the
#: cursor (``ARGV[1]``) is past the newest key, for each stream (``KEYS[3]``
#: on) what tells whether entries after the cursor were trimmed: its length
#: (``-1``: no such stream), entries ever added (``-1``: unknown), first
#: entry kept, and the predecessor named by its first entry after the
#: cursor (``''``: none); then the entries after the cursor across streams,
#: in id order, five values each (the stream's index from 1, id, data, type,
#: predecessor), until ``ARGV[2]`` entries or ``ARGV[3]`` bytes of data and
#: type (past the first entry). It merges inside Redis, reading each stream
#: in chunks that start at its share of the count and grow: what it returns
#: is about what it reads, however many streams, and one command sees no
#: trim between the check and the read.
READ_SCRIPT = """
local last = redis.call('GET', KEYS[1]) or '0-0'
local epoch = redis.call('GET', KEYS[2])
local out = {last, epoch}
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local ams, aseq = parse(ARGV[1])
local lms, lseq = parse(last)
if epoch ~= ARGV[4] or ams > lms or (ams == lms and aseq > lseq) then
  return out
end
local limit, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
-- A first chunk of each stream's share of the limit (at most 64 entries),
-- then chunks that double, never past what is still wanted.
local share = math.max(1, math.min(64, math.ceil(limit / math.max(1, #KEYS - 2))))
local streams = {}
local function refill(s, want)
  local got = redis.call('XRANGE', s.key, s.pos, '+', 'COUNT', want)
  s.done = #got < want
  s.size = math.min(want * 2, 128)
  s.buf, s.at = got, 1
  s.ms, s.seq = {}, {}
  for j, entry in ipairs(got) do
    s.ms[j], s.seq[j] = parse(entry[1])
  end
  if #got > 0 then
    s.pos = '(' .. got[#got][1]
  end
end
local function field(entry, name)
  local fields = entry[2]
  for j = 1, #fields, 2 do
    if fields[j] == name then
      return fields[j + 1]
    end
  end
  return ''
end
for i = 3, #KEYS do
  local s = {key = KEYS[i], pos = '(' .. ARGV[1], size = share, done = true,
             buf = {}, at = 1, ms = {}, seq = {}}
  streams[#streams + 1] = s
  if redis.call('EXISTS', KEYS[i]) == 0 then
    out[#out + 1] = -1
    out[#out + 1] = -1
    out[#out + 1] = ''
    out[#out + 1] = ''
  else
    local info = redis.call('XINFO', 'STREAM', KEYS[i])
    local f = {}
    for j = 1, #info, 2 do
      f[info[j]] = info[j + 1]
    end
    local first = f['recorded-first-entry-id']
    if not first and f['first-entry'] then
      first = f['first-entry'][1]
    end
    refill(s, share)
    out[#out + 1] = f['length']
    out[#out + 1] = f['entries-added'] or -1
    out[#out + 1] = first or ''
    out[#out + 1] = s.buf[1] and field(s.buf[1], 'p') or ''
  end
end
local count, bytes = 0, 0
while count < limit and (count == 0 or bytes < budget) do
  local best = nil
  for i, s in ipairs(streams) do
    if s.at > #s.buf and not s.done then
      refill(s, math.min(s.size, limit - count))
    end
    if s.at <= #s.buf then
      if best == nil then
        best = i
      else
        local b = streams[best]
        local ms, bms = s.ms[s.at], b.ms[b.at]
        if ms < bms or (ms == bms and s.seq[s.at] < b.seq[b.at]) then
          best = i
        end
      end
    end
  end
  if best == nil then
    break
  end
  local s = streams[best]
  local entry = s.buf[s.at]
  s.at = s.at + 1
  local data, kind = field(entry, 'd'), field(entry, 'e')
  out[#out + 1] = best
  out[#out + 1] = entry[1]
  out[#out + 1] = data
  out[#out + 1] = kind
  out[#out + 1] = field(entry, 'p')
  count = count + 1
  bytes = bytes + #data + #kind
end
return out
"""
