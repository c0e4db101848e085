-- What made a timer when its kind and times do not say it alone (a consent withdrawal: the
-- consent state's version), so the job id derives from the cause after a restore or replay.
ALTER TABLE timers ADD COLUMN cause_key text;
