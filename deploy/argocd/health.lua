-- Argo CD health check for wapipe.dev/WhatsAppWebhookPipeline.
-- Installed under argocd-cm key resource.customizations.health.wapipe.dev_WhatsAppWebhookPipeline
-- (see argocd-cm.yaml). Written for Lua 5.1 (Argo CD runs gopher-lua); tested with lua5.1 and
-- lua5.4 against tests/argocd/fixtures/ by scripts/test-lua.sh.
--
-- Mapping, first match wins:
--   1. no status, or status.observedGeneration < metadata.generation   -> Progressing
--      (the operator has not looked at the current spec yet; a stale Ready=True must not
--      show Healthy right after a change)
--   2. any condition False with a spec-error reason (SPEC_ERRORS)       -> Degraded
--      (these do not heal by waiting: someone has to change the spec or the cluster)
--   3. Scaling=False with reason Paused (annotation wapipe.dev/pause-scaling) -> Suspended
--      (someone froze the workers on purpose, e.g. to replay into an empty group; nothing
--      is wrong and nothing will change until the annotation goes)
--   4. Ready=True, observed at the current generation                   -> Healthy
--   5. Ready=False with any other reason (Kafka unreachable, pods not
--      ready, rollout in progress, lag unreadable)                      -> Progressing
--      (the operator keeps retrying; stuck pods still show Degraded on the child
--      Deployments in the app tree through Argo CD's own Deployment check)
--   6. Ready Unknown or missing                                         -> Progressing
local hs = {}

-- Reasons that mean "the spec or the cluster is wrong, retrying will not help".
local SPEC_ERRORS = {
  ChildRefused = true,
  ImageNotAllowed = true,
  InvalidSpec = true,
  NotSupported = true,
  ResourceConflict = true,
  TopicConfigRefused = true,
  SecretNotFound = true,
  Forbidden = true,
}

local function condition(conditions, wanted)
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.type .. "=" .. tostring(c.status)
  if c.reason ~= nil and c.reason ~= "" then
    text = text .. " (" .. c.reason .. ")"
  end
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local function summary(status)
  local parts = {}
  if status.currentWorkers ~= nil or status.desiredWorkers ~= nil then
    table.insert(parts, string.format("workers %s/%s",
      tostring(status.currentWorkers or "?"), tostring(status.desiredWorkers or "?")))
  end
  if status.partitions ~= nil then
    table.insert(parts, "partitions " .. tostring(status.partitions))
  end
  if status.totalLag ~= nil then
    table.insert(parts, "lag " .. tostring(status.totalLag))
  end
  if status.timeLagSeconds ~= nil then
    table.insert(parts, "delay " .. tostring(status.timeLagSeconds) .. "s")
  end
  return table.concat(parts, ", ")
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to observe generation %d (observed %s)",
    generation, tostring(observed or "none"))
  return hs
end

local conditions = status.conditions or {}

for _, c in ipairs(conditions) do
  if c.status == "False" and c.reason ~= nil and SPEC_ERRORS[c.reason] then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end

local scaling = condition(conditions, "Scaling")
if scaling ~= nil and scaling.status == "False" and scaling.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = describe(scaling)
  local s = summary(status)
  if s ~= "" then
    hs.message = hs.message .. " (" .. s .. ")"
  end
  return hs
end

local ready = condition(conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

-- A condition carries its own observedGeneration: an old Ready=True says nothing about
-- the current spec.
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = string.format("Ready reflects generation %d, not %d", ready.observedGeneration, generation)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  local s = summary(status)
  if s ~= "" then
    hs.message = "Ready: " .. s
  else
    hs.message = describe(ready)
  end
  return hs
end

-- Not ready for a transient reason: name the first component that is not ready.
local components = { "TopicReady", "IngressReady", "WorkersReady" }
for _, name in ipairs(components) do
  local c = condition(conditions, name)
  if c ~= nil and c.status ~= "True" then
    hs.status = "Progressing"
    hs.message = describe(c)
    return hs
  end
end
hs.status = "Progressing"
hs.message = describe(ready)
return hs
