-- Run the Argo CD health script against every fixture, the way Argo CD does: a fresh
-- environment per object with the resource in the global `obj`, the script's return
-- value being {status, message}. Works on Lua 5.1 (gopher-lua's dialect) and 5.4.
-- Usage: lua run.lua <health.lua> <fixtures.lua>
local script_path, fixtures_path = arg[1], arg[2]
local cases = dofile(fixtures_path)

local source
do
  local f = assert(io.open(script_path, "r"))
  source = f:read("*a")
  f:close()
end

local function run_health(obj)
  local env = setmetatable({ obj = obj }, { __index = _G })
  local chunk, err
  if setfenv ~= nil then -- Lua 5.1
    chunk, err = loadstring(source, "=health.lua")
    if chunk then setfenv(chunk, env) end
  else
    chunk, err = load(source, "=health.lua", "t", env)
  end
  if not chunk then error(err) end
  return chunk()
end

local passed, failed = 0, 0
for _, case in ipairs(cases) do
  local ok, result = pcall(run_health, case.object)
  local problem = nil
  if not ok then
    problem = "script error: " .. tostring(result)
  elseif type(result) ~= "table" then
    problem = "script returned " .. type(result)
  elseif result.status ~= case.expect.status then
    problem = string.format("status %s, want %s (message: %s)", tostring(result.status),
      case.expect.status, tostring(result.message))
  elseif case.expect.message ~= nil and
      (result.message == nil or not string.find(result.message, case.expect.message, 1, true)) then
    problem = string.format("message %q does not contain %q", tostring(result.message), case.expect.message)
  end
  if problem then
    failed = failed + 1
    print("FAIL " .. case.name .. ": " .. problem)
  else
    passed = passed + 1
    print(string.format("ok   %s: %s (%s)", case.name, result.status, result.message))
  end
end
print(string.format("%s: %d passed, %d failed", _VERSION:gsub(" ", ""), passed, failed))
if failed > 0 then os.exit(1) end
