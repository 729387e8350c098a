-- wrk script: a different token from $TOKENS (one per line) for every request; thread n starts
-- n/threads of the way into the list, so two threads never send the same token at once.
local tokens, i, threads = {}, 0, 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  i = (id or 0) * math.floor(#tokens / 2)
end
function request()
  i = (i + 1) % #tokens
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. tokens[i + 1] })
end
