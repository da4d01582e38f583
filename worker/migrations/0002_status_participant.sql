-- A group send's receipts are one event per member: statuses become unique by
-- (wamid, status, participant), the participant '' for a 1:1 message. Rows written under
-- 0001's key are kept; those of group sends get their participant back from the raw event.
ALTER TABLE wapipe_statuses ADD COLUMN IF NOT EXISTS participant text NOT NULL DEFAULT '';
UPDATE wapipe_statuses
   SET participant = split_part(ltrim(btrim(
         raw #>> '{entry,0,changes,0,value,statuses,0,recipient_participant_id}'), '+'), '@', 1)
 WHERE participant = ''
   AND raw #>> '{entry,0,changes,0,value,statuses,0,recipient_participant_id}' IS NOT NULL;
ALTER TABLE wapipe_statuses DROP CONSTRAINT IF EXISTS wapipe_statuses_pkey;
ALTER TABLE wapipe_statuses ADD CONSTRAINT wapipe_statuses_pkey
    PRIMARY KEY (wamid, status, participant);

-- wapipe_message_status keeps one row per wamid: for a group send it is the highest rank
-- across the members (read as soon as one member read it; failed if any failed).
COMMENT ON TABLE wapipe_message_status IS
    'current status per wamid: the highest rank seen, across all members of a group send';
