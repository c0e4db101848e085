-- The trace context (CloudEvents distributed-tracing extension) of the event that set a timer:
-- the job it issues later belongs to that event's trace (an erasure's, a withdrawal's).
ALTER TABLE timers ADD COLUMN traceparent text, ADD COLUMN tracestate text;
