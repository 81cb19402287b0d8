"""The Lua scripts that keep the Redis store's sequence, epoch and links
atomic: each runs as one command, so no other client comes between its steps.
"""

#: The Lua script of :meth:`RedisBackend.append`. It assigns the next key of
#: the shared sequence (milliseconds from Redis's clock, never going back, nor
#: below ``ARGV[5]``, the newest key the caller knows, when the store was
#: emptied), names the store's epoch if it has none yet, adds the event under
#: it with the key of the channel's previous entry (``p``), trims, and sets
#: the expiry. It returns the key and the epoch.
#:
#: With an idempotency window (``ARGV[7]`` milliseconds, ``KEYS[4]`` the
#: key's record), an event stored under that key within the window is
#: returned instead (its key, epoch, data and type, and a 1), and nothing
#: is stored: the check and the append are one step, whoever retries.
APPEND_SCRIPT = """
if ARGV[7] ~= '0' then
  local seen = redis.call('HMGET', KEYS[4], 'i', 'x', 'd', 'e')
  if seen[1] then
    return {seen[1], seen[2], 1, seen[3], seen[4] or ''}
  end
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
local last = redis.call('GET', KEYS[2]) or ARGV[5]
local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
if lms then
  lms = tonumber(lms)
  if ms <= lms then
    ms = lms
    seq = tonumber(lseq) + 1
  end
end
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[6]
  redis.call('SET', KEYS[3], epoch)
end
local id = string.format('%d-%d', ms, seq)
local before = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if before[1] then
  prev = before[1][1]
end
if ARGV[3] == '' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'd', ARGV[4], 'p', prev)
else
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'd', ARGV[4], 'p', prev,
             'e', ARGV[3])
end
redis.call('SET', KEYS[2], id)
if ARGV[7] ~= '0' then
  redis.call('HSET', KEYS[4], 'i', id, 'x', epoch, 'd', ARGV[4], 'e', ARGV[3])
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {id, epoch}
"""

#: Names the store's epoch if it has none; returns it with the newest key.
HEAD_SCRIPT = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
return {redis.call('GET', KEYS[1]) or '0-0', epoch}
"""
